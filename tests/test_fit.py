"""fit: underfitting on a 1-unit bottleneck, overfitting on a memorising MLP, the healthy MLP
silent; the trivial-predictor baselines against the loss of that predictor; curves, plot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import codes_of, load_sample, run_checks_on

from nndoctor.checks import fit
from nndoctor.checks.fit import TargetStats, overfitting, underfitting
from nndoctor.engine.runner import run_checks


@pytest.fixture(scope="module")
def tiny():
    return run_checks_on("tiny_capacity_mlp", ["fit"])


@pytest.fixture(scope="module")
def memorising():
    return run_checks_on("memorising_mlp", ["fit"])


@pytest.mark.slow
def test_tiny_capacity_underfits(tiny):
    assert codes_of(tiny) == {"underfitting"}
    (finding,) = tiny.findings
    section = tiny.sections["fit"]
    assert finding.evidence["best_train_loss"] == min(section["train_losses"])
    assert finding.evidence["ratio"] == pytest.approx(min(section["train_losses"]) / section["baseline_loss"])
    assert finding.evidence["ratio"] > fit.UNDERFIT_RATIO
    # 10 classes: the class prior's entropy is close to ln 10.
    assert math.log(10) * 0.95 < section["baseline_loss"] <= math.log(10)


@pytest.mark.slow
def test_memorising_overfits_from_the_epoch_after_the_best(memorising):
    assert codes_of(memorising) == {"overfitting"}
    (finding,) = memorising.findings
    train, val = memorising.sections["fit"]["train_losses"], memorising.sections["fit"]["val_losses"]
    best = int(np.argmin(val))
    assert finding.evidence["from_epoch"] == best + 2 == memorising.sections["fit"]["overfit_from_epoch"]
    assert val[-1] > (1 + fit.OVERFIT_MARGIN) * val[best] and train[-1] < train[best]
    assert f"From epoch {best + 2}" in finding.message


def test_healthy_mlp_neither_over_nor_underfits():
    report = run_checks_on("mlp", ["fit"])
    assert report.checks[0].status == "pass"
    section = report.sections["fit"]
    assert len(section["train_losses"]) == len(section["val_losses"]) == 5
    assert section["train_losses"][-1] < 0.2 * section["baseline_loss"]


def test_skipped_without_a_validation_loader():
    report = run_checks_on("xor", ["fit"])
    assert report.checks[0].status == "skipped" and "validation" in report.checks[0].reason


def test_model_and_optimizer_restored():
    setup = load_sample("memorising_mlp")
    before = {k: v.clone() for k, v in setup.model.state_dict().items()}
    run_checks(setup, ["fit"], {"fit": {"epochs": 2}}, device="cpu")
    assert all(torch.equal(before[k], v) for k, v in setup.model.state_dict().items())
    assert setup.optimizer.state_dict()["state"] == {}


# --------------------------------------------------------------------------- baselines

def _stats(criterion, targets):
    stats = TargetStats(criterion)
    for chunk in targets.split(7):
        stats.add(chunk)
    return stats.loss()


def test_class_prior_baseline_is_the_loss_of_predicting_the_prior():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 15 + [3] * 5)
    prior = torch.bincount(y).double() / len(y)
    constant_logits = prior.log().float().expand(len(y), 4)
    expected = nn.CrossEntropyLoss()(constant_logits, y).item()
    assert _stats(nn.CrossEntropyLoss(), y) == pytest.approx(expected, rel=1e-6)
    smoothing = nn.CrossEntropyLoss(label_smoothing=0.1)
    smoothed = (0.9 * prior + 0.1 / 4).log().float().expand(len(y), 4)
    stats = TargetStats(smoothing)
    stats.add(y)
    assert stats.loss(num_classes=4) == pytest.approx(smoothing(smoothed, y).item(), rel=1e-5)


@pytest.mark.slow
def test_variance_and_binary_entropy_baselines():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(100, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5]) + 3
    assert _stats(nn.MSELoss(), y) == pytest.approx(nn.MSELoss()(y.mean(0).expand_as(y), y).item(), rel=1e-5)
    b = (torch.rand(100, 2, generator=g) < torch.tensor([0.2, 0.7])).float()
    mean = b.mean(0)
    expected = nn.BCEWithLogitsLoss()(torch.logit(mean).expand_as(b), b).item()
    assert _stats(nn.BCEWithLogitsLoss(), b) == pytest.approx(expected, rel=1e-5)
    assert _stats(nn.L1Loss(), y) is None  # no baseline: underfitting is not judged


def test_verdicts_on_fixed_curves():
    # Validation rising, training falling, by more than the margin: overfitting from epoch 3.
    assert overfitting([2.0, 1.5, 1.0, 0.5], [1.8, 1.2, 1.3, 1.5]).evidence["from_epoch"] == 3
    # A small bump (5%) is noise; both rising is a broken run, not memorisation.
    assert overfitting([2.0, 1.5, 1.0, 0.5], [1.8, 1.2, 1.22, 1.26]) is None
    assert overfitting([1.0, 1.2, 1.5, 2.0], [1.0, 1.3, 1.6, 2.1]) is None
    assert underfitting([2.3, 2.2, 2.1], 2.3, "class-prior").evidence["ratio"] == pytest.approx(2.1 / 2.3)
    assert underfitting([2.3, 1.2, 0.4], 2.3, "class-prior") is None
    assert underfitting([2.3, 2.2], None, None) is None


@pytest.mark.slow
def test_png_plot_and_rich_section(tmp_path, memorising):
    from matplotlib.image import imread
    from rich.console import Console

    from nndoctor.render.rich import print_report

    path = tmp_path / "fit.png"
    report = run_checks_on("memorising_mlp", ["fit"], settings={"fit": {"epochs": 3, "plot": str(path)}})
    assert report.sections["fit"]["plot"] == str(path) and path.stat().st_size > 10_000
    image = imread(path)
    rgb = image[..., :3]
    orange = np.all(np.abs(rgb - np.array([0xFF, 0x7F, 0x0E]) / 255) < 0.08, axis=-1)  # validation curve
    assert orange.sum() > 100
    console = Console(width=80, record=True, color_system=None)
    print_report(memorising, console)
    text = console.export_text()
    assert "overfitting from epoch" in text and "ep 5" in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80


# --------------------------------------------------------------------------- issue 13: no verdict without evidence

def test_underfitting_is_not_judged_after_too_few_steps():
    report = run_checks_on("tiny_capacity_mlp", ["fit"], settings={"fit": {"epochs": 2}})
    metrics = report.checks[0].metrics
    assert metrics["optimizer_steps"] == 2 * 76 < fit.MIN_UNDERFIT_STEPS
    assert report.findings == [] and "too few" in metrics["underfitting_not_judged"]


def test_a_loss_still_falling_is_not_underfitting():
    report = run_checks_on("keras_init_classifier", ["fit"])
    metrics = report.checks[0].metrics
    assert report.findings == [] and metrics["optimizer_steps"] >= fit.MIN_UNDERFIT_STEPS
    train = report.sections["fit"]["train_losses"]
    assert (train[-2] - train[-1]) / train[-2] >= fit.UNDERFIT_STILL_FALLING
    assert "still falling" in metrics["underfitting_not_judged"]


def test_an_unstable_loss_gets_the_lower_lr_fix():
    from nndoctor.report.codes import CODES

    unstable = underfitting([2.3, 2.0, 2.4, 2.1], 2.3, "class-prior")
    assert unstable.evidence["unstable"] is True and unstable.fix == fit.UNSTABLE_FIX
    assert "Lower the LR" in unstable.fix and "too high" in unstable.message
    smooth = underfitting([2.3, 2.25, 2.2, 2.15], 2.3, "class-prior")
    assert smooth.evidence["unstable"] is False and smooth.fix == CODES["underfitting"].fix


def test_a_truly_unstable_cnn_is_told_to_lower_the_lr_end_to_end():
    """Issue 13 item 16's stand-in (ResNet-18 at SGD 0.1 with batch 16 is truly unstable): a
    small BatchNorm CNN at SGD lr 2, momentum 0.9, batch 16 bounces near the trivial loss for
    360 steps. underfitting is right; its fix must lower the LR, not raise it."""
    from torch.utils.data import DataLoader, TensorDataset

    from nndoctor.target import Setup

    g = torch.Generator().manual_seed(0)
    x = torch.randn(448, 1, 8, 8, generator=g)
    y = (x.reshape(448, -1) @ torch.randn(64, 4, generator=g)).argmax(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    setup = Setup(model=model, train_loader=DataLoader(TensorDataset(x[:384], y[:384]), batch_size=16, shuffle=True,
                                                       generator=torch.Generator().manual_seed(0)),
                  val_loader=DataLoader(TensorDataset(x[384:], y[384:]), batch_size=16),
                  optimizer=torch.optim.SGD(model.parameters(), lr=2.0, momentum=0.9))
    report = run_checks(setup, ["fit"], {"fit": {"epochs": 15}}, device="cpu")
    (finding,) = [f for f in report.findings if f.code == "underfitting"]
    assert finding.evidence["unstable"] is True and finding.fix == fit.UNSTABLE_FIX
    assert "raise the lr" not in finding.fix.lower() and "higher" not in finding.fix.lower()
    assert "too high" in finding.message


def test_overfitting_needs_a_gap_in_one_mode():
    # Validation rising, eval-mode training loss falling, but both equal (BatchNorm's running
    # statistics lagging in both): no gap, no memorisation (issue 13 item 14).
    assert overfitting([1.3, 1.05, 1.1, 1.13], [1.3, 1.0, 1.05, 1.12]) is None
    # Training loss above the validation loss: not fitting at all, not overfitting.
    assert overfitting([1.6, 1.5, 1.45, 1.4], [1.2, 1.0, 1.1, 1.2]) is None
    finding = overfitting([1.3, 1.0, 0.8, 0.6], [1.3, 1.0, 1.05, 1.12])
    assert finding.evidence["gap"] == pytest.approx((1.12 - 0.6) / 1.12)


def test_memorising_overfits_with_a_gap_in_eval_mode(memorising):
    section = memorising.sections["fit"]
    assert len(section["train_eval_losses"]) == len(section["val_losses"]) == 5
    (finding,) = memorising.findings
    assert finding.evidence["gap"] > fit.OVERFIT_MARGIN
    assert section["train_eval_losses"][-1] < section["val_losses"][-1]


def test_a_wobble_near_the_floor_is_not_overfitting():
    """The zoo's DistilBERT: val 0.020 -> 0.048 at its last epoch, 97% accuracy; it gave back
    4% of what it gained over the trivial predictor (ln 2), under OVERFIT_GIVEN_BACK."""
    from nndoctor.checks.fit import OVERFIT_GIVEN_BACK, overfitting

    train, val = [0.2, 0.05, 0.01, 0.002, 0.0015], [0.25, 0.06, 0.03, 0.020, 0.048]
    assert overfitting(train, val, baseline=0.693) is None
    assert (0.048 - 0.020) / (0.693 - 0.020) < OVERFIT_GIVEN_BACK
    # the same rise from a floor it had barely left is a turn
    assert overfitting(train, [0.25, 0.06, 0.03, 0.020, 0.048], baseline=0.05) is not None
