"""grads: gradient statistics from the shared run, and its four findings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from conftest import codes_of, load_sample, run_checks_on, seeded_loader

from nndoctor.checks import grads
from nndoctor.engine.runner import run_checks
from nndoctor.engine.session import Session
from nndoctor.probes import train_run as instrument
from nndoctor.target import Setup

RUN_CHECKS = ["nan", "grads", "overfit"]


# sample -> (its code, where, codes of these checks that follow from the same bug)
BROKEN = {
    "detached_head_net": ("no-gradient", "encoder", {"cannot-overfit"}),  # only the head learns
    "unused_layer_net": ("no-gradient", "extra", set()),
    "partial_optimizer_mlp": ("not-in-optimizer", "body", {"cannot-overfit"}),  # only the head learns
    "deep_sigmoid_mlp": ("vanishing-gradient", "network.0", {"cannot-overfit", "loss-not-decreasing"}),
    "nan_lr_mlp": ("exploding-gradient", None, {"non-finite"}),  # where: the largest share
    "exploding_grad_mlp": ("exploding-gradient", "network.10", set()),  # the output layer's share
}


@pytest.fixture(scope="module")
def reports():
    return {name: run_checks_on(name, RUN_CHECKS) for name in BROKEN}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_sample_gets_its_code_and_nothing_unrelated(reports, name):
    code, where, related = BROKEN[name]
    report = reports[name]
    found = [f for f in report.findings if f.code == code]
    assert len(found) == 1, [(f.code, f.where) for f in report.findings]
    if where is not None:
        assert found[0].where == where
    assert codes_of(report) <= {code} | related
    assert all(c.status != "error" for c in report.checks)


def test_no_gradient_names_the_layer_and_its_parameters(reports):
    (finding,) = [f for f in reports["unused_layer_net"].findings if f.code == "no-gradient"]
    assert finding.evidence["parameters"] == ["extra.weight", "extra.bias"]
    assert finding.evidence["none"] == ["extra.weight", "extra.bias"]
    assert finding.evidence["steps"] == 100
    (finding,) = [f for f in reports["detached_head_net"].findings if f.code == "no-gradient"]
    assert finding.evidence["parameters"] == ["encoder.0.weight", "encoder.0.bias",
                                              "encoder.2.weight", "encoder.2.bias"]


def test_not_in_optimizer_counts_the_missing_values(reports):
    (finding,) = [f for f in reports["partial_optimizer_mlp"].findings if f.code == "not-in-optimizer"]
    assert finding.evidence["numel"] == 20 * 64 + 64 + 64 * 64 + 64


def test_vanishing_gradient_measures_the_ratio(reports):
    (finding,) = [f for f in reports["deep_sigmoid_mlp"].findings if f.code == "vanishing-gradient"]
    assert finding.evidence["last_layer"] == "network.26"  # the last hidden layer
    # well inside the bar (2.7x: the bar sits halfway in log between this sample and DistilBERT)
    assert finding.evidence["ratio"] < grads.VANISHING_RATIO / 2 and finding.evidence["ratio_init"] < 1e-9
    rms = finding.evidence["layer_rms_init"]
    assert list(rms)[0] == "network.0" and rms["network.0"] < 1e-9 * rms["network.26"]


def test_exploding_gradient_before_the_nan(reports):
    (finding,) = [f for f in reports["nan_lr_mlp"].findings if f.code == "exploding-gradient"]
    assert finding.evidence["overflowed"] is True
    assert finding.evidence["growth"] > grads.EXPLODING_GROWTH
    assert finding.where in {"0", "2", "4"}  # a Linear of the Sequential


def test_exploding_gradient_from_a_huge_init_scale(reports):
    (finding,) = reports["exploding_grad_mlp"].findings
    assert finding.evidence["relative_init"] > 5 * grads.EXPLODING_RELATIVE  # 710
    assert finding.evidence["peak_step"] == 0 and "at init" in finding.message


def test_exactly_zero_gradient_is_no_gradient():
    class ZeroedGate(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(8, 3)
            self.gate = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return self.body(x) + 0.0 * self.gate  # the gate's gradient is exactly 0

    torch.manual_seed(0)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    report = run_checks(Setup(model=ZeroedGate(), train_loader=seeded_loader(x, y)), ["grads"],
                        {"overfit": {"steps": 5}}, device="cpu")
    (finding,) = report.findings
    assert finding.code == "no-gradient" and finding.where == "gate"
    assert "exactly zero" in finding.message and finding.evidence["none"] == []


def test_default_optimizer_holds_every_parameter():
    report = run_checks_on("log_relu_net", ["grads"])  # built without an optimizer
    assert "not-in-optimizer" not in codes_of(report)


def test_statistics_equal_those_computed_from_p_grad():
    setup = load_sample("mlp")
    session = Session(setup, device="cpu", seed=0)
    model, optimizer = session.model, session.optimizer
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    with session.preserved():
        optimizer.zero_grad(set_to_none=True)
        loss = session.loss(session.first_batch)
        loss.backward()
        direct = {n: p.grad.detach().clone() for n, p in named}
        weights = {n: p.detach().clone() for n, p in named}
        optimizer.step()
        updates = {n: (p.detach() - weights[n]).norm().item() / weights[n].norm().item() for n, p in named}
    run = instrument.shared_run(session, 3)
    assert run.losses[0] == pytest.approx(loss.item(), rel=1e-6)
    assert run.names == [n for n, _ in named]
    for i, name in enumerate(run.names):
        g = direct[name]
        assert run.grad_norm[0][i] == pytest.approx(g.norm().item(), rel=1e-5)
        assert run.grad_mean[0][i] == pytest.approx(g.mean().item(), rel=1e-4, abs=1e-9)
        assert run.grad_std[0][i] == pytest.approx(g.std().item(), rel=1e-4)
        assert run.grad_max[0][i] == pytest.approx(g.abs().max().item(), rel=1e-6)
        assert run.update_ratio[0][i] == pytest.approx(updates[name], rel=1e-4)
    total = math.sqrt(sum(g.norm().item() ** 2 for g in direct.values()))
    assert run.total_norm[0] == pytest.approx(total, rel=1e-5)
    assert len(run.grad_norm) == 3 and sorted(run.grad_mean) == [0, 2]  # detail: first and last


def test_group_by_module():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    assert grads.group_by_module(model, ["1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias"]) == [
        ("1", ["1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias"])]
    assert grads.group_by_module(model, ["0.bias", "1.1.weight", "1.1.bias"]) == [
        ("0.bias", ["0.bias"]), ("1.1", ["1.1.weight", "1.1.bias"])]
    everything = [n for n, _ in model.named_parameters()]
    assert grads.group_by_module(model, everything) == [(None, everything)]


# ---------------------------------------------------------------- healthy architectures
# The vanishing-gradient ratio must stay quiet on deep healthy nets: measured here on
# a TransformerEncoder, a ResNet of BasicBlocks with BatchNorm and a 2-layer LSTM.

class TokenTransformer(nn.Module):
    def __init__(self, vocab=200, d=32, classes=5):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, 16, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens) + self.pos).mean(1))


class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    def __init__(self, c=16, blocks=6, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.blocks = nn.Sequential(*[BasicBlock(c) for _ in range(blocks)])
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class SequenceLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.project = nn.Linear(4, 16)  # a layer before the LSTM: the ratio spans the recurrence
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.out = nn.Linear(32, 1)

    def forward(self, x):
        return self.out(self.lstm(self.project(x))[0][:, -1])


def _transformer():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 200, (64, 16), generator=g)
    return TokenTransformer(), tokens, tokens[:, 0] % 5, torch.optim.AdamW


def _resnet():
    g = torch.Generator().manual_seed(2)
    return ResNet(), torch.randn(32, 3, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g), \
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)


def _lstm():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(32, 30, 4, generator=g)
    return SequenceLSTM(), x, x[:, :, 0].sum(1, keepdim=True) / 30 ** 0.5, torch.optim.Adam


@pytest.mark.parametrize("build", [_transformer, _resnet, _lstm], ids=["transformer", "resnet", "lstm"])
def test_healthy_deep_architectures_are_silent(build):
    torch.manual_seed(0)
    model, x, y, optimizer = build()
    setup = Setup(model=model, train_loader=seeded_loader(x, y), optimizer=optimizer(model.parameters()))
    report = run_checks(setup, ["grads"], {"overfit": {"steps": 30}}, device="cpu")
    assert report.findings == []
    metrics = report.checks[0].metrics
    # at least 10x above the threshold, at init and over the run
    assert metrics["vanishing_ratio"] > 10 * grads.VANISHING_RATIO
    assert metrics["vanishing_ratio_init"] > 10 * grads.VANISHING_RATIO
    assert metrics["grad_norm_growth"] < grads.EXPLODING_GROWTH / 10
    layer = next(iter(metrics["layers"].values()))
    assert {"grad_norm_init", "grad_mean_init", "grad_std_init", "grad_max_init"} <= set(layer)


def test_large_regression_targets_are_not_exploding():
    # Issue 13 item 3: MSE on targets near 100 has gradient norms in the thousands, rightly.
    report = run_checks_on("large_target_regression", ["grads"])
    metrics = report.checks[0].metrics
    assert report.findings == []
    assert metrics["total_norm_max"] > 1e3  # the absolute threshold of before fired here
    assert metrics["grad_norm_relative_init"] < grads.EXPLODING_RELATIVE / 5


def test_huge_relative_norm_with_a_loss_fn_is_not_judged_without_the_output():
    # A known limit: a loss_fn hides the model's output, so the relative norm is not measured
    # and only the growth across steps (and an overflow) can find an explosion.
    setup = load_sample("exploding_grad_mlp")
    criterion = nn.CrossEntropyLoss()
    setup.loss_fn = lambda model, batch: criterion(model(batch[0]), batch[1])
    report = run_checks(setup, ["grads"], {"overfit": {"steps": 5}}, device="cpu")
    assert "grad_norm_relative_init" not in report.checks[0].metrics
    assert report.findings == []


class AttentionPooled(nn.Module):
    """Query/key/value projections first, a token-wise body, a mean over the tokens, then a
    pre-classifier (DistilBERT's layout): the vanishing comparison must not take the q/k
    projections as its first layer nor the post-pooling pre-classifier as its last hidden one."""

    def __init__(self, depth: int, act):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 16), nn.Linear(8, 16), nn.Linear(8, 16)
        body = []
        for _ in range(depth):
            body += [nn.Linear(16, 16), act()]
        self.body = nn.Sequential(*body)
        self.pre_classifier = nn.Linear(16, 16)
        self.classifier = nn.Linear(16, 3)

    def forward(self, x):
        scores = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / 4, dim=-1)
        h = self.body(scores @ self.v(x)).mean(1)
        return self.classifier(torch.relu(self.pre_classifier(h)))


def _attention_pooled(depth: int, act, optimizer):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(64, 6, 8, generator=g)
    model = AttentionPooled(depth, act)
    setup = Setup(model=model, train_loader=seeded_loader(x, x[:, :, 0].sum(1).gt(0).long()),
                  optimizer=optimizer(model.parameters()))
    return run_checks(setup, ["grads"], {"overfit": {"steps": 30}}, device="cpu")


def test_vanishing_compares_the_value_path_with_the_last_token_wise_layer():
    report = _attention_pooled(2, nn.ReLU, torch.optim.AdamW)
    assert report.findings == []
    metrics = report.checks[0].metrics
    assert metrics["vanishing_layers"] == ["v", "body.2"]
    assert metrics["vanishing_ratio"] > 10 * grads.VANISHING_RATIO
    # a vanishing body behind the same attention and pooling is still found, at the value path
    report = _attention_pooled(14, nn.Sigmoid, lambda p: torch.optim.SGD(p, lr=0.1))
    (finding,) = [f for f in report.findings if f.code == "vanishing-gradient"]
    assert (finding.where, finding.evidence["last_layer"]) == ("v", "body.26")


def test_compared_layers_without_positions_keep_the_order():
    layers = [("attn.q_proj", [0]), ("attn.k_proj", [1]), ("attn.v_proj", [2]), ("fc1", [3]), ("pool_fc", [4])]
    assert grads.compared_layers(layers, {}) == (layers[2], layers[4])  # positions unknown: kept
    spread = {"attn.v_proj": 10, "fc1": 10, "pool_fc": 1}
    assert grads.compared_layers(layers, spread) == (layers[2], layers[3])
    flat = [("network.0", [0]), ("network.2", [1])]  # an MLP: every layer at one position
    assert grads.compared_layers(flat, {"network.0": 1, "network.2": 1}) == (flat[0], flat[1])
