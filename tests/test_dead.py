"""dead: dead-neurons and saturated-activations, and the activation scan behind them."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import HEALTHY, codes_of, load_sample, only, run_checks_on

from nndoctor.checks import dead
from nndoctor.engine.runner import run_checks
from nndoctor.probes.activations import MIN_OBSERVATIONS, SATURATION_MARGIN, scan_activations
from nndoctor.target import Setup

# --------------------------------------------------------------------------- broken samples

@pytest.mark.parametrize("sample, code, wheres", [
    ("dead_relu_mlp", "dead-neurons", {"network.3"}),  # negative bias before a ReLU module
    ("functional_relu_net", "dead-neurons", {"block2:relu#0"}),  # the same, through F.relu
    ("saturated_tanh_mlp", "saturated-activations", {"network.1", "network.3"}),  # N(0,1) weights
])
def test_broken_sample_is_found_where_the_bug_is(sample, code, wheres):
    report = run_checks_on(sample, ["dead"])
    check = report.checks[0]
    assert check.status == "warning", check.reason
    assert codes_of(report) == {code}
    assert {f.where for f in report.findings} == wheres
    for finding in report.findings:
        ev = finding.evidence
        pct_key, count_key = ("dead_pct", "dead_units") if code == "dead-neurons" \
            else ("saturated_pct", "saturated_units")
        assert ev[pct_key] > dead.DEFAULTS["threshold"]
        assert ev[pct_key] == pytest.approx(100 * ev[count_key] / ev["total_units"], abs=0.01)
        # batches of 32 until every unit has scan.MIN_OBSERVATIONS (299): 10 batches, 320 samples
        assert ev["total_units"] == 64 and ev["batches_scanned"] == 10 and ev["samples_scanned"] == 320
        if code == "dead-neurons":
            assert ev["observations_per_unit"] == 320 and ev["min_observations"] == 299
            assert "320 or more observations" in finding.message
        assert str(ev[count_key]) in finding.message and f"{ev[pct_key]:.1f}%" in finding.message
    if sample == "functional_relu_net":  # the layer that fed the F.relu, for the reader
        assert report.findings[0].evidence["after"] == "block2.linear"
        assert "(after `block2.linear`)" in report.findings[0].message
    # the healthy layer next to the bug stays below the bar
    healthy_layer = {"dead_relu_mlp": "network.1", "functional_relu_net": "block1:relu#0"}.get(sample)
    if healthy_layer:
        assert check.metrics["dead_pct"][healthy_layer] == 0.0


def test_threshold_setting_moves_the_bar():
    measured = run_checks_on("dead_relu_mlp", ["dead"]).findings[0].evidence["dead_pct"]
    above = run_checks_on("dead_relu_mlp", ["dead"], settings={"dead": {"threshold": measured + 1}})
    assert above.checks[0].status == "pass" and not above.findings
    bad = run_checks_on("dead_relu_mlp", ["dead"], settings={"dead": {"threshold": 150}})
    assert bad.checks[0].status == "error" and "between 0 and 100" in bad.checks[0].reason


# --------------------------------------------------------------------------- healthy models

@pytest.mark.slow
@pytest.mark.parametrize("sample", HEALTHY)
def test_healthy_samples_stay_quiet(sample):
    for seed in range(5):
        report = run_checks_on(sample, ["dead"], seed=seed)
        assert report.checks[0].status == "pass", (seed, report.checks[0].reason, report.findings)


def test_xor_tanh_is_not_saturated():
    metrics = run_checks_on("xor", ["dead"]).checks[0].metrics
    assert metrics["saturated_pct"] == {"1": 0.0}  # the tanh is seen, and is in its linear range


def _setup(model, x, y):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    return Setup(model=model, train_loader=loader)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder_is_quiet_and_its_functional_activations_are_seen(activation):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, activation=activation,
                                       batch_first=True, dropout=0.1)
    encoder = nn.Sequential(nn.Linear(8, 32), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                            nn.Flatten(), nn.Linear(32 * 6, 3))
    x, y = torch.randn(128, 6, 8), torch.randint(0, 3, (128,))
    report = run_checks(_setup(encoder, x, y), ["dead"], device="cpu")
    assert report.checks[0].status == "pass", report.findings
    dead_pct = report.checks[0].metrics["dead_pct"]
    # F.relu/F.gelu inside each TransformerEncoderLayer.forward, 64 feed-forward units each
    assert set(dead_pct) == {f"1.layers.{i}:{activation}#0" for i in range(2)}
    scan = scan_activations(encoder, [x[:32]])
    assert all(s.units == 64 and s.unit_dim == 2 for s in scan.layers)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one ReLU module called twice."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def test_resnet_is_quiet_and_a_reused_relu_is_two_activations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          BasicBlock(16), BasicBlock(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 5))
    x, y = torch.randn(128, 3, 8, 8), torch.randint(0, 5, (128,))
    report = run_checks(_setup(model, x, y), ["dead"], device="cpu")
    assert report.checks[0].status == "pass", report.findings
    assert set(report.checks[0].metrics["dead_pct"]) == {"2", "3.relu", "3.relu#1", "4.relu", "4.relu#1"}


# --------------------------------------------------------------------------- the scan itself

def _batches(x, size=32):
    return [x[i:i + size] for i in range(0, len(x), size)]


def test_fire_counts_equal_the_activations_computed_directly():
    setup = load_sample("dead_relu_mlp")
    model, net = setup.model, setup.model.network
    x = torch.cat([xb for xb, _ in list(setup.train_loader)[:4]])
    scan = scan_activations(model, _batches(x))
    with torch.no_grad():
        h1 = net[1](net[0](x))
        h2 = net[3](net[2](h1))
    for where, h in (("network.1", h1), ("network.3", h2)):
        stats = scan.get(where)
        assert torch.equal(stats.counts, (h > 0).sum(0))
        assert stats.elements_per_unit == len(x) == scan.samples
        assert torch.allclose(stats.rate, (h > 0).double().mean(0))
    assert scan.get("network.3").dead_units == int(((h2 > 0).sum(0) == 0).sum()) > 32


def test_conv_channels_count_every_position_with_batch_statistics():
    setup = load_sample("simple_cnn")
    model = setup.model
    x = torch.cat([xb for xb, _ in list(setup.train_loader)[:2]])
    batches = _batches(x)
    scan = scan_activations(model, batches)
    block = model.features[0]
    with torch.no_grad():
        block.train()  # BatchNorm with each batch's statistics, as in the scan
        fired = sum((block[2](block[1](block[0](b))) > 0).sum((0, 2, 3)) for b in batches)
    stats = scan.get("features.0.2")
    assert stats.unit_dim == 1 and stats.units == 16
    assert stats.elements_per_unit == len(x) * 32 * 32
    assert torch.equal(stats.counts, fired)


def test_saturation_counts_equal_the_activations_computed_directly():
    setup = load_sample("saturated_tanh_mlp")
    net = setup.model.network
    x = torch.cat([xb for xb, _ in list(setup.train_loader)[:4]])
    scan = scan_activations(setup.model, _batches(x))
    with torch.no_grad():
        t1 = net[1](net[0](x))
    direct = (t1.abs() > 1 - SATURATION_MARGIN).sum(0)
    assert torch.equal(scan.get("network.1").counts, direct)
    assert scan.get("network.1").saturated_units(dead.STUCK_RATE) == int((direct > len(x) / 2).sum())


class Gates(nn.Module):
    """Functional sigmoid and tanh, a conv1d feeding F.relu, and a relu in the root."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, padding=1)
        self.proj = nn.Linear(10, 10)

    def forward(self, x):  # x: (N, 4, 10)
        a = F.relu(self.conv(x))  # (N, 6, 10): units are the 6 channels
        b = torch.sigmoid(self.proj(x))  # (N, 4, 10): units are the 10 features
        return a.sum(1) + b.tanh().sum(1)


def test_functional_activations_sites_units_and_values():
    torch.manual_seed(0)
    model = nn.Sequential(Gates())
    x = torch.randn(16, 4, 10)
    scan = scan_activations(model, [x])
    assert [(s.where, s.kind, s.units, s.unit_dim) for s in scan.layers] == [
        ("0:relu#0", "F.relu", 6, 1), ("0:sigmoid#0", "torch.sigmoid", 10, 2), ("0:tanh#0", "Tensor.tanh", 10, 2)]
    assert [s.after for s in scan.layers] == ["0.conv", "0.proj", "0.proj"]
    gates = model[0]
    with torch.no_grad():
        s = torch.sigmoid(gates.proj(x))
        relu = F.relu(gates.conv(x))
    assert torch.equal(scan.get("0:relu#0").counts, (relu > 0).sum((0, 2)))
    assert torch.equal(scan.get("0:sigmoid#0").counts,
                       ((s < SATURATION_MARGIN) | (s > 1 - SATURATION_MARGIN)).sum((0, 1)))


def test_activation_modules_are_not_counted_twice():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Tanh(), nn.Sigmoid())
    scan = scan_activations(model, [torch.randn(32, 4)])
    # nn.ReLU calls F.relu, nn.Tanh torch.tanh ...: one site per module, no ":relu#0" sites
    assert [s.where for s in scan.layers] == ["1", "3", "4", "5"]
    assert scan.get("1").elements_per_unit == 32


def test_functional_calls_in_the_root_and_outside_the_model():
    class Root(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 8)

        def forward(self, x):
            return torch.relu(self.fc(x)) + F.relu(self.fc(x))

    torch.manual_seed(0)
    model = Root()

    def forward(batch):  # a loss_fn-like wrapper: its sigmoid is not the model's
        return torch.sigmoid(model(batch)).mean()

    scan = scan_activations(model, [torch.randn(8, 3)], forward)
    assert [s.where for s in scan.layers] == [":relu#0", ":relu#1"]


def test_scan_leaves_no_hook_mode_or_statistics_behind():
    setup = load_sample("bottleneck")
    model = setup.model
    model.eval()
    model.stem[1].train()  # a mixed state must come back as it was
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = run_checks(setup, ["dead"], device="cpu")
    assert report.checks[0].status == "pass"
    scan_activations(model, [torch.randn(4, 3, 16, 16)])
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert torch._C._len_torch_function_stack() == 0
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_scan_cleans_up_when_the_model_raises():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            F.relu(self.fc(x))
            raise RuntimeError("boom")

    model = Broken()
    with pytest.raises(RuntimeError, match="boom"):
        scan_activations(model, [torch.randn(2, 3)])
    assert not model.fc._forward_hooks and not model._forward_pre_hooks
    assert torch._C._len_torch_function_stack() == 0 and model.training


@pytest.mark.parametrize("units, dead_units, flagged", [(4, 3, False), (4, 4, True), (8, 5, True), (8, 4, False)])
def test_tiny_layers_are_reported_only_when_wholly_dead(units, dead_units, flagged):
    torch.manual_seed(0)
    lin = nn.Linear(6, units)
    with torch.no_grad():
        lin.bias[:dead_units] = -100.0  # exactly these units never fire
        lin.bias[dead_units:] = 100.0
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(units, 2))
    n = MIN_OBSERVATIONS + 21  # enough samples (one observation each) for a verdict
    report = run_checks(_setup(model, torch.randn(n, 6), torch.randint(0, 2, (n,))), ["dead"], device="cpu")
    assert report.checks[0].metrics["dead_pct"]["1"] == pytest.approx(100 * dead_units / units)
    assert (codes_of(report) == {"dead-neurons"}) is flagged


def test_cli_dead_gates_on_warning():
    import json

    from typer.testing import CliRunner

    from nndoctor.cli import app

    result = CliRunner().invoke(app, ["dead", "sample_models/functional_relu_net.py", "--format", "json",
                                      "--fail-on", "warning"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert [(f["code"], f["where"]) for f in data["findings"]] == [("dead-neurons", "block2:relu#0")]


# --------------------------------------------------------------------------- observations (issue 13)

def test_nan_fed_units_are_not_dead_and_the_data_is_named():
    """A NaN column makes every first-layer unit output NaN: not 'never fired' (item 5)."""
    report = run_checks_on("nan_column_mlp", ["dead"])
    check = report.checks[0]
    assert check.status == "pass" and not report.findings
    assert check.metrics["dead_pct"] == {"1": None, "3": None}  # none judged: no finite output
    assert check.metrics["inconclusive"]["1"] == (
        "0 finite observations per unit, 299 needed for a verdict; 64 of its 64 units output NaN/Inf")


def test_dead_units_beside_nan_rows_are_judged_on_the_finite_ones():
    torch.manual_seed(0)
    n, nan_rows = 400, 40
    x, y = torch.randn(n, 6), torch.randint(0, 2, (n,))
    x[:nan_rows * 10:10, 2] = float("nan")  # every 10th of the first 400 rows
    lin = nn.Linear(6, 16)
    with torch.no_grad():
        lin.bias[:12] = -100.0  # 12 of 16 units never fire
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(16, 2))
    report = run_checks(_setup(model, x, y), ["dead"], device="cpu")
    finding = only(report, "dead-neurons")
    ev = finding.evidence
    assert (ev["dead_units"], ev["judged_units"], ev["dead_pct"]) == (12, 16, 75.0)
    assert ev["non_finite_units"] == 16  # the NaN rows reach every unit
    # the scan reads on until 299 finite rows: 11 batches (352 rows, 36 of them NaN)
    assert (ev["samples_scanned"], ev["observations_per_unit"]) == (352, 352 - 36)
    assert "never fire on 316 or more observations" in finding.message


def _rare_units(n, rate_sigma=2.33, dead=0, seed=0):
    """16 ReLU units with unit-variance pre-activations and bias -2.33: each fires on ~1% of
    inputs (P(z > 2.33) = 0.0099); the first `dead` never do."""
    torch.manual_seed(seed)
    lin = nn.Linear(6, 16)
    with torch.no_grad():
        lin.weight.copy_(F.normalize(torch.randn(16, 6), dim=1))
        lin.bias.fill_(-rate_sigma)
        lin.bias[:dead] = -100.0
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(16, 2))
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 6, generator=g), torch.randint(0, 2, (n,), generator=g)
    return model, x, y


def test_rarely_firing_units_look_dead_on_one_batch_but_are_not_judged_on_it():
    """Item 15: on 32 observations most 1%-firing units are never seen firing."""
    model, x, y = _rare_units(64)
    one_batch = scan_activations(model, [x[:32]])  # no minimum: the old verdict
    assert one_batch.get("1").dead_pct > 50
    report = run_checks(_setup(model, x, y), ["dead"], device="cpu")  # 64 samples: all there is
    check = report.checks[0]
    assert check.status == "pass" and not report.findings
    assert check.metrics["dead_pct"]["1"] is None
    assert check.metrics["inconclusive"]["1"] == "64 finite observations per unit, 299 needed for a verdict"


def test_with_enough_observations_rare_units_fire_and_dead_ones_are_found():
    model, x, y = _rare_units(1024)
    check = run_checks(_setup(model, x, y), ["dead"], device="cpu").checks[0]
    assert check.status == "pass"
    assert check.metrics["batches_scanned"] == 10 and check.metrics["samples_scanned"] == 320  # >= 299
    assert check.metrics["dead_pct"]["1"] < 50
    model, x, y = _rare_units(1024, dead=12)
    finding = only(run_checks(_setup(model, x, y), ["dead"], device="cpu"), "dead-neurons")
    assert finding.evidence["dead_units"] >= 12 and finding.evidence["observations_per_unit"] == 320


@pytest.mark.slow
def test_units_that_die_during_the_shared_run_are_reported():
    """Item 8: Adam at 0.1 kills the second conv's ReLUs; they fired at initialisation."""
    report = run_checks_on("adam_high_lr_cnn", ["nan", "dead"])
    check = next(c for c in report.checks if c.name == "dead")
    assert check.metrics["dead_pct"]["features.4"] == 0.0  # alive at init
    finding = only(report, "dead-neurons")
    ev = finding.evidence
    assert finding.where == "features.4" and ev["training_steps"] == 100
    assert ev["died_during_training"] == ev["dead_units"] > 32 and ev["dead_at_init"] == 0
    assert "after 100 training steps" in finding.message
    assert f"died during training, by step {ev['died_by_step']}" in finding.message
    assert ev["died_by_step"] == (ev["layer_silent_from_step"] or 100)
    assert check.metrics["after_training"]["dead_pct"]["features.4"] == ev["dead_pct"]


@pytest.mark.slow
def test_healthy_sample_after_the_shared_run_is_quiet():
    for sample in ("mlp", "simple_cnn"):
        report = run_checks_on(sample, ["nan", "dead"])
        check = next(c for c in report.checks if c.name == "dead")
        assert check.status == "pass", report.findings
        assert isinstance(check.metrics["after_training"], dict)


def test_the_step_a_layer_went_silent_is_read_from_its_gradient_norms():
    from types import SimpleNamespace

    # params: conv.weight, conv.bias, head.weight; conv's gradient is exactly 0 from step 3 on
    run = SimpleNamespace(modules=["conv", "conv", "head"],
                          grad_norm=[[1.0, 0.5, 2.0], [0.3, 0.1, 1.0], [1e-9, 0.0, 1.0],
                                     [0.0, 0.0, 1.0], [0.0, 0.0, 0.5]])
    assert dead._silent_from(run, "conv") == 3
    assert dead._silent_from(run, "head") is None  # still learning at the end
    assert dead._silent_from(run, "missing") is None and dead._silent_from(run, None) is None
