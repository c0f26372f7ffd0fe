"""lr-find: suggestions equal the reference algorithms, verdicts on broken and healthy samples,
the wrapper's silence, batch forms, bit-for-bit restore, the plots."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import codes_of, load_sample, run_checks_on
from nndoctor.checks import lr_find
from nndoctor.checks.lr_find import Curve, suggest
from nndoctor.engine import Session
from nndoctor.runner import run_checks
from nndoctor.target import Setup


# --------------------------------------------------------------------------- fixed curves

def recorded_curve(seed: int, n: int = 100, diverge: bool = False) -> Curve:
    """A range-test-like curve: flat, a descent around 1e-3, a rise; noisy; smoothed as
    torch-lr-finder smooths (EMA, smooth_f = 0.05)."""
    rng = np.random.default_rng(seed)
    lrs = [1e-7 * (10 / 1e-7) ** (i / (n - 1)) for i in range(n)]
    centre = rng.uniform(-4, -2)
    raw = [2.3 - 1.5 / (1 + math.exp(-2.5 * (math.log10(lr) - centre)))
           + (0.8 * (math.log10(lr) + 1) ** 2 if math.log10(lr) > -1 else 0.0)
           + rng.normal(0, 0.08) for lr in lrs]
    losses = [raw[0]]
    for value in raw[1:]:
        losses.append(0.05 * value + 0.95 * losses[-1])
    if diverge:  # what a diverged run records: it stops where the loss passed 5x its best
        cut = next(i for i, v in enumerate(losses) if v > 1.2 * min(losses[:i + 1]) and i > 60)
        lrs, losses = lrs[:cut + 1], losses[:cut + 1]
        return Curve(lrs, losses, n, stop="diverged")
    return Curve(lrs, losses, n)


def fastai_valley(lrs, losses, num_it):
    """fastai's lr_find + valley (fastai/callback/schedule.py), on tensors as fastai runs it."""
    lrs, losses = torch.tensor(lrs[num_it // 10:-5]), torch.tensor(losses[num_it // 10:-5])
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def fastai_minimum(lrs, losses, num_it):
    lrs, losses = torch.tensor(lrs[num_it // 10:-5]), torch.tensor(losses[num_it // 10:-5])
    return lrs[losses.argmin()].item() / 10


def torch_lr_finder_steepest(lrs, losses, capsys):
    """torch-lr-finder's own answer: LRFinder.plot(suggest_lr=True) on a finder with this history."""
    from matplotlib.figure import Figure
    from torch_lr_finder import LRFinder

    model = nn.Linear(2, 1)
    finder = LRFinder(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss())
    finder.history = {"lr": list(lrs), "loss": list(losses)}
    _, suggested = finder.plot(ax=Figure().add_subplot(), suggest_lr=True)
    capsys.readouterr()  # its prints
    return suggested


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("diverge", [False, True])
def test_suggestions_equal_the_reference_algorithms(seed, diverge, capsys):
    curve = recorded_curve(seed, diverge=diverge)
    found = suggest(curve, "valley")
    assert found["reason"] is None
    ref_valley = fastai_valley(curve.lrs, curve.losses, curve.num_iter)
    assert found["suggestions"]["valley"] == pytest.approx(ref_valley, rel=1e-6)
    assert found["suggestions"]["steepest"] == pytest.approx(
        torch_lr_finder_steepest(curve.lrs, curve.losses, capsys), rel=1e-12)
    assert found["suggestions"]["min/10"] == pytest.approx(
        fastai_minimum(curve.lrs, curve.losses, curve.num_iter), rel=1e-6)
    assert found["suggested_lr"] == found["suggestions"]["valley"]
    assert suggest(curve, "steepest")["suggested_lr"] == found["suggestions"]["steepest"]


def test_a_flat_curve_gives_a_reason_not_an_lr():
    rng = np.random.default_rng(0)
    lrs = [1e-7 * 1e8 ** (i / 99) for i in range(100)]
    found = suggest(Curve(lrs, list(2.3 + rng.normal(0, 0.01, 100)), 100), "valley")
    assert found["suggested_lr"] is None and all(v is None for v in found["suggestions"].values())
    assert "never descends" in found["reason"]


def test_a_curve_that_diverges_at_once_gives_a_reason():
    lrs = [1e-7 * 1e8 ** (i / 99) for i in range(6)]
    found = suggest(Curve(lrs, [2.3, 2.5, 3.5, 6.0, 9.0, 12.0], 100, stop="diverged"), "valley")
    assert found["suggested_lr"] is None
    assert "diverged after 6 steps" in found["reason"]
    nan_found = suggest(Curve(lrs, [2.3, 2.2, float("nan"), float("nan"), 1, 1], 100,
                              stop="non-finite"), "valley")
    assert "NaN/Inf" in nan_found["reason"]


# --------------------------------------------------------------------------- on samples

def test_far_too_high_lr_is_flagged():
    report = run_checks_on("high_lr_mlp", ["lr-find"])
    (finding,) = [f for f in report.findings if f.code == "lr-too-high"]
    ev = finding.evidence
    assert ev["current_lr"] == 1.0
    assert ev["current_lr"] > lr_find.HIGH_FACTOR * ev["suggested_lr"]
    assert ev["current_lr"] > ev["min_loss_lr"] and ev["rise_back"] >= lr_find.RISE_BACK
    assert finding.where is None and report.checks[0].status == "warning"


@pytest.mark.parametrize("name, settings", [
    ("xor", {}), ("mlp", {}), ("bottleneck", {}),
    ("text_classifier", {"num_iter": 30}),  # its curve is flat at any length (see lr_find.MIN_DESCENT)
])
def test_healthy_samples_stay_silent(name, settings):
    report = run_checks_on(name, ["lr-find"], settings={"lr-find": settings})
    assert report.checks[0].status == "pass", report.checks[0].reason
    assert not codes_of(report) & {"lr-too-high", "lr-too-low"}


def test_simple_cnn_sgd_005_is_legitimately_too_high_and_001_is_not():
    # simple_cnn's SGD lr=0.05 (momentum 0.9) is flagged, rightly: trained at it, the loss
    # sits at chance (ln 10) for 8 epochs while lr=0.01 reaches 0.02 (measured; see lr_find).
    # The sample ships with 0.01; 0.05 is set here to keep that measurement honest.
    assert not codes_of(run_checks_on("simple_cnn", ["lr-find"])) & {"lr-too-high", "lr-too-low"}
    setup = load_sample("simple_cnn")
    assert setup.optimizer.param_groups[0]["lr"] == 0.01
    setup.optimizer.param_groups[0]["lr"] = 0.05
    report = run_checks(setup, ["lr-find"], {}, device="cpu")
    assert "lr-too-high" in codes_of(report)


def test_too_low_lr_is_flagged():
    setup = load_sample("mlp")
    setup.optimizer.param_groups[0]["lr"] = 1e-7
    report = run_checks(setup, ["lr-find"], {}, device="cpu")
    (finding,) = report.findings
    assert finding.code == "lr-too-low"
    assert finding.evidence["suggested_lr"] > lr_find.LOW_FACTOR * 1e-7


@pytest.fixture(scope="module")
def mlp_report():
    return run_checks_on("mlp", ["lr-find"])


def _train(setup, lr, steps):
    torch.manual_seed(0)
    model = setup.model
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    done = 0
    while done < steps:
        for x, y in setup.train_loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    with torch.no_grad():
        return float(np.mean([criterion(model(x), y).item() for x, y in setup.train_loader]))


def test_training_at_the_suggestion_beats_100x_it(mlp_report):
    suggested = mlp_report.sections["lr_find"]["suggested_lr"]
    # 30 epochs: valley is the cautious suggestion, slower at first (after 3 epochs, 1.48 vs
    # 0.67 at 100x), and better once trained (measured: 0.061 vs 0.92; 10x it: 0.0012).
    at_suggestion = _train(load_sample("mlp"), suggested, 480)
    at_100x = _train(load_sample("mlp"), 100 * suggested, 480)
    assert at_suggestion < 0.5 * at_100x
    assert at_suggestion < 0.1 * math.log(10)  # it did learn (chance is ln 10)


def test_json_section_and_metrics(mlp_report):
    data = mlp_report.to_dict()
    section = data["lr_find"]
    assert len(section["lrs"]) == len(section["losses"]) == 100
    assert section["lrs"][0] == pytest.approx(1e-7) and section["lrs"][-1] == pytest.approx(10)
    assert set(section["suggestions"]) == {"valley", "steepest", "min/10"}
    assert section["method"] == "valley" and section["suggested_lr"] == section["suggestions"]["valley"]
    metrics = data["checks"][0]["metrics"]
    assert metrics["suggested_lr"] == section["suggested_lr"] and metrics["current_lr"] == 1e-3


def test_rich_section_fits_80_columns(mlp_report):
    from rich.console import Console

    from nndoctor.render.rich import print_report

    console = Console(width=80, record=True, color_system=None)
    print_report(mlp_report, console)
    text = console.export_text()
    assert "valley" in text and "◀ suggested" in text and "▲" in text and "●" in text
    assert any(ch in text for ch in "⠁⠂⠄⡀⢀⣀⠉⠒⠤")  # the Braille curve
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80


# --------------------------------------------------------------------------- the wrapper

@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_model_and_optimizer_restored_bit_for_bit_and_nothing_printed(capsys, tmp_path, cache):
    setup = load_sample("mlp")
    x, y = next(iter(setup.train_loader))
    nn.CrossEntropyLoss()(setup.model(x), y).backward()
    setup.optimizer.step()  # Adam state to restore too
    setup.optimizer.zero_grad(set_to_none=True)
    model_before = {k: v.clone() for k, v in setup.model.state_dict().items()}
    opt_before = setup.optimizer.state_dict()
    opt_before = {"state": {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in s.items()}
                            for k, s in opt_before["state"].items()},
                  "param_groups": [dict(g) for g in opt_before["param_groups"]]}
    session = Session(setup, device="cpu", seed=0)
    capsys.readouterr()
    settings = {**lr_find.DEFAULTS, "num_iter": 30, "cache": cache, "cache_dir": str(tmp_path)}
    curve = lr_find.range_test(session, settings)  # no preserved() here: the finder's own reset()
    import gc

    gc.collect()  # torch-lr-finder deletes its cache files when its cacher is collected
    assert list(tmp_path.iterdir()) == []
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # torch-lr-finder's prints and tqdm bar are gone
    assert len(curve.lrs) >= lr_find.MIN_POINTS and any("finished" in m for m in curve.messages)
    after = setup.model.state_dict()
    assert all(torch.equal(model_before[k], after[k]) for k in model_before)
    opt_after = setup.optimizer.state_dict()
    assert opt_after["param_groups"] == opt_before["param_groups"]
    for k, s in opt_before["state"].items():
        for n, t in s.items():
            assert torch.equal(t, opt_after["state"][k][n]) if torch.is_tensor(t) else t == opt_after["state"][k][n]


def test_cache_auto_goes_to_disk_only_for_large_state(monkeypatch):
    session = Session(load_sample("mlp"), device="cpu", seed=0)
    assert lr_find._cache_on_disk(session, {"cache": "auto"}) == (False, None)
    monkeypatch.setattr(lr_find, "AUTO_DISK_MB", 0.5)  # the mlp's 235k weights are ~0.9 MB
    assert lr_find._cache_on_disk(session, {"cache": "auto"}) == (True, None)
    assert lr_find._cache_on_disk(session, {"cache": "memory"}) == (False, None)
    with pytest.raises(ValueError, match="cache"):
        lr_find._cache_on_disk(session, {"cache": "ssd"})


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(3, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x1, x2):
        return self.head(torch.relu(self.a(x1) + self.b(x2)))


class HFStyle(nn.Module):
    """Takes model(**batch) and returns its own loss, as Hugging Face models do."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, features, labels):
        logits = self.net(features)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def _data(n=256):
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(n, 4, generator=g), torch.randn(n, 3, generator=g)
    return x1, x2, (x1[:, 0] + x2[:, 0] > 0).long() + (x1[:, 1] > 1).long()


def test_multi_input_and_dict_batches_work():
    x1, x2, y = _data()
    tuples = [((x1[i:i + 32], x2[i:i + 32]), y[i:i + 32]) for i in range(0, 256, 32)]
    dicts = [{"features": x1[i:i + 32], "labels": y[i:i + 32]} for i in range(0, 256, 32)]
    for model, loader in [(TwoInputs(), tuples), (HFStyle(), dicts)]:
        report = run_checks(Setup(model=model, train_loader=loader), ["lr-find"],
                            {"lr-find": {"num_iter": 50}}, device="cpu")
        check = report.checks[0]
        assert check.status in ("pass", "warning"), check.reason
        section = report.sections["lr_find"]
        assert len(section["losses"]) >= lr_find.MIN_POINTS
        assert section["suggested_lr"] is not None


def test_png_plot_is_written_with_the_curve(tmp_path):
    from matplotlib.image import imread

    path = tmp_path / "lr.png"
    report = run_checks_on("high_lr_mlp", ["lr-find"], settings={"lr-find": {"plot": str(path)}})
    assert report.sections["lr_find"]["plot"] == str(path)
    assert path.stat().st_size > 10_000
    image = imread(path)
    assert image.shape[0] >= 300 and image.shape[1] >= 500
    # The curve's blue (tab:blue = #1f77b4) is drawn: many pixels of it, not a blank canvas.
    rgb = image[..., :3]
    blue = np.all(np.abs(rgb - np.array([0x1F, 0x77, 0xB4]) / 255) < 0.08, axis=-1)
    assert blue.sum() > 200


def test_a_loss_non_finite_from_the_first_step_skips_the_test():
    # log of a ReLU output: -inf at any LR, so the range test has nothing to say about the LR
    check = run_checks_on("log_relu_net", ["lr-find"]).checks[0]
    assert check.status == "skipped"
    assert check.reason.startswith("the loss is NaN/Inf at the test's first step (LR 1e-07)")
