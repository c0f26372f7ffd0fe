"""The `init` check: output activation vs loss, the loss at init, the signal through depth at
init, and batch dependency.

Each broken sample gets its code with the right `where` (and nothing else from data/init);
healthy samples and healthy architectures built here (Transformer encoder, residual blocks,
LSTM/GRU) stay silent; the hook-gathered numbers are checked against direct computations.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import HEALTHY, codes_of, load_sample, only, run_checks_on
from torch.utils.data import DataLoader, TensorDataset

from nndoctor.checks import init as init_check
from nndoctor.engine.runner import run_checks
from nndoctor.engine.session import Session
from nndoctor.target import Setup

LOUD = ("warning", "error")



def run_on(model, x, y, criterion=None, checks=("init",), batch_size=16):
    setup = Setup(model=model, train_loader=DataLoader(TensorDataset(x, y), batch_size=batch_size),
                  criterion=criterion)
    return run_checks(setup, list(checks), device="cpu")


def loud(report) -> list:
    return [(f.code, f.where, f.message) for f in report.findings if f.severity in LOUD]


def first_batch(name: str):
    return Session(load_sample(name), device="cpu", seed=0).first_batch


@pytest.fixture(scope="module")
def broken():
    return {name: run_checks_on(name, ["data", "init"])
            for name in ("softmax_ce_mlp", "tiny_init_mlp", "hot_logits_mlp", "batch_mixing_cnn")}


# --------------------------------------------------------------------------- broken samples

def test_softmax_into_cross_entropy(broken):
    report = broken["softmax_ce_mlp"]
    finding = only(report, "output-activation-mismatch")
    assert finding.severity == "error" and finding.check == "init"
    assert finding.where == "network.5"  # the nn.Softmax
    assert finding.evidence["final_activation"] == "softmax"
    assert finding.evidence["criterion"] == "CrossEntropyLoss" and not finding.evidence["criterion_chosen"]
    assert 0 <= finding.evidence["output_min"] <= finding.evidence["output_max"] <= 1
    assert codes_of(report) == {"output-activation-mismatch"}


def test_tiny_init_collapses_and_hook_stats_match_direct_ones(broken):
    report = broken["tiny_init_mlp"]
    finding = only(report, "bad-init")
    assert finding.severity == "warning"
    assert finding.where == "layers.2"
    assert finding.evidence["ratio"] < init_check.COLLAPSE_RATIO
    assert finding.evidence["ratio_at_where"] < init_check.COLLAPSE_RATIO
    assert codes_of(report) == {"bad-init"}

    # The per-layer signal (std over the batch, averaged over units), computed directly.
    setup = load_sample("tiny_init_mlp")
    x = first_batch("tiny_init_mlp").args[0]
    direct = {}
    with torch.no_grad():
        h = x
        for i, layer in enumerate(setup.model.layers):
            out = layer(h)
            direct[f"layers.{i}"] = out.std(dim=0).mean().item()
            h = torch.relu(out)
    measured = next(c for c in report.checks if c.name == "init").metrics["signal_std"]
    assert measured.keys() == direct.keys()
    for name, value in direct.items():
        assert measured[name] == pytest.approx(value, rel=1e-3, abs=1e-30), name
    assert finding.evidence["first_std"] == pytest.approx(direct["layers.0"], rel=1e-6)


def test_hot_logits_first_loss(broken):
    report = broken["hot_logits_mlp"]
    finding = only(report, "init-loss")
    assert finding.severity == "warning" and finding.where == "head"
    setup = load_sample("hot_logits_mlp")
    batch = first_batch("hot_logits_mlp")
    with torch.no_grad():
        direct = F.cross_entropy(setup.model(batch.args[0]), batch.target).item()
    ev = finding.evidence
    assert ev["first_loss"] == pytest.approx(direct, rel=1e-5)
    assert ev["expected_loss"] == pytest.approx(math.log(10))
    assert ev["ratio"] == pytest.approx(direct / math.log(10), rel=1e-5) and ev["ratio"] > init_check.INIT_LOSS_RATIO
    assert codes_of(report) == {"init-loss"}


def test_batch_mixing_view(broken):
    report = broken["batch_mixing_cnn"]
    finding = only(report, "batch-dependency")
    assert finding.severity == "error" and finding.where == "pool"
    ev = finding.evidence
    assert ev["after"] == "features" and ev["before"] is None  # the mix is inside `pool`
    # the leak, computed directly with plain autograd on the same batch and weighting
    setup = load_sample("batch_mixing_cnn")
    x = first_batch("batch_mixing_cnn").args[0].clone().requires_grad_()
    setup.model.eval()
    out = setup.model(x)
    weights = torch.randn(out[0].shape, generator=torch.Generator().manual_seed(0))
    assert ev["probed_samples"] == [0, len(x) // 2, len(x) - 1]
    ratios = {}
    for i in ev["probed_samples"]:  # the finding reports the probed sample that leaks most
        (grad,) = torch.autograd.grad((out[i] * weights).sum(), x, retain_graph=True)
        per_sample = grad.abs().reshape(len(x), -1).amax(1)
        others = torch.cat([per_sample[:i], per_sample[i + 1:]])
        ratios[i] = ((others.max() / per_sample[i]).item(), int((others > 0).sum()))
    worst = max(ratios, key=lambda i: ratios[i][0])
    assert ev["sample"] == worst
    assert ev["leak_ratio"] == pytest.approx(ratios[worst][0], rel=1e-5)
    assert ev["other_samples_leaking"] == ratios[worst][1]
    assert codes_of(report) == {"batch-dependency"}


class PermutedChannelStats(nn.Module):
    """batch_mixing_cnn's ChannelStats with its bug fixed: permute, then reshape."""

    def forward(self, h):
        n, c = h.shape[:2]
        per_channel = h.permute(1, 0, 2, 3).reshape(c, n, -1)
        return torch.cat([per_channel.mean(2), per_channel.amax(2)], 0).t()


def test_batch_mixing_fixed_with_permute_is_silent():
    setup = load_sample("batch_mixing_cnn")
    setup.model.pool = PermutedChannelStats()
    report = run_checks(setup, ["init"], device="cpu")
    assert loud(report) == []
    assert report.checks[0].metrics["batch_leak_ratio"] == 0


# --------------------------------------------------------------------------- healthy

@pytest.mark.parametrize("seed", range(5))
def test_healthy_samples_stay_silent(seed):
    for name in HEALTHY:
        report = run_checks_on(name, ["data", "init"], seed=seed)
        for check in report.checks:
            assert check.status == "pass", (name, seed, check.name, check.status, check.reason)
        assert loud(report) == [], (name, seed)
        init = next(c for c in report.checks if c.name == "init")
        assert init.metrics["batch_leak_ratio"] == 0, name
        assert init.metrics["loss_ratio"] < init_check.INIT_LOSS_RATIO, name


class TinyTransformer(nn.Module):
    def __init__(self, vocab=100, d=32, classes=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.position = nn.Embedding(12, d)  # indexed by arange: not a batch-first input stand-in
        layer = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens):
        h = self.position(torch.arange(tokens.shape[1])) + self.embed(tokens)
        return self.head(self.encoder(h).mean(1))


class ResidualMLP(nn.Module):
    """Residual blocks without normalisation: the stream adds up instead of collapsing."""

    def __init__(self, features=16, width=64, blocks=6, classes=4):
        super().__init__()
        self.stem = nn.Linear(features, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
                                    for _ in range(blocks))
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(torch.relu(h))


class ResNetish(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                    nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        h = torch.relu(self.stem(x) + self.branch(self.stem(x)))
        return self.head(h.mean((2, 3)))


class GRUTagger(nn.Module):
    def __init__(self, features=8, classes=4):
        super().__init__()
        self.gru = nn.GRU(features, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


def _plain_cnn():
    """VGG-style, 8 convs, no normalisation, PyTorch's default init."""
    layers, channels = [], 3
    for i, width in enumerate([16, 16, 32, 32, 64, 64, 64, 64]):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()] + ([nn.MaxPool2d(2)] if i % 2 else [])
        channels = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64, 4))


def _plain_mlp(depth=6, width=64):
    layers, size = [], 16
    for _ in range(depth - 1):
        layers += [nn.Linear(size, width), nn.ReLU()]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, 4))


@pytest.mark.parametrize("make", [
    lambda g: (TinyTransformer(), torch.randint(0, 100, (32, 12), generator=g)),
    lambda g: (ResidualMLP(), torch.randn(32, 16, generator=g)),
    lambda g: (ResNetish(), torch.randn(32, 3, 8, 8, generator=g)),
    lambda g: (GRUTagger(), torch.randn(32, 10, 8, generator=g)),
    lambda g: (_plain_mlp(), torch.randn(32, 16, generator=g)),  # PyTorch default init, 6 plain layers
    lambda g: (_plain_cnn(), torch.randn(32, 3, 16, 16, generator=g)),
], ids=["transformer", "residual-mlp", "resnet-block", "gru", "default-init-mlp", "default-init-vgg"])
def test_healthy_architectures_stay_silent(make):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model, x = make(g)
    report = run_on(model, x, torch.randint(0, 4, (len(x),), generator=g), checks=("data", "init"))
    assert [c.status for c in report.checks] == ["pass", "pass"], [(c.name, c.reason) for c in report.checks]
    assert loud(report) == []
    assert report.checks[1].metrics["batch_leak_ratio"] == 0


# --------------------------------------------------------------------------- output activation vs loss

def _classifier(out_features, last=None):
    layers = [nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, out_features)]
    return nn.Sequential(*layers, *([last] if last is not None else []))


@pytest.mark.parametrize("last, criterion, binary, where, activation", [
    (nn.Sigmoid(), nn.BCEWithLogitsLoss(), True, "3", "sigmoid"),
    (None, nn.BCELoss(), True, "2", "none (logits)"),
    (None, nn.NLLLoss(), False, "2", "none (logits)"),
    (nn.Softmax(dim=1), nn.NLLLoss(), False, "3", "softmax"),
    (nn.Sigmoid(), F.cross_entropy, False, "3", "sigmoid"),  # a functional criterion
], ids=["sigmoid-bcewithlogits", "logits-bce", "logits-nll", "softmax-nll", "sigmoid-ce"])
def test_mismatches(last, criterion, binary, where, activation):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = (torch.rand(64, 1, generator=g) > 0.5).float() if binary else torch.randint(0, 3, (64,), generator=g)
    report = run_on(_classifier(1 if binary else 3, last), x, y, criterion)
    finding = only(report, "output-activation-mismatch")
    assert finding.severity == "error" and finding.where == where
    assert finding.evidence["final_activation"] == activation
    assert codes_of(report) == {"output-activation-mismatch"}


@pytest.mark.parametrize("last, criterion, binary", [
    (nn.LogSoftmax(dim=1), nn.NLLLoss(), False),
    (nn.Sigmoid(), nn.BCELoss(), True),
    (None, nn.BCEWithLogitsLoss(), True),
    (None, nn.CrossEntropyLoss(), False),
], ids=["logsoftmax-nll", "sigmoid-bce", "logits-bcewithlogits", "logits-ce"])
def test_matching_pairs_are_silent(last, criterion, binary):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = (torch.rand(64, 1, generator=g) > 0.5).float() if binary else torch.randint(0, 3, (64,), generator=g)
    report = run_on(_classifier(1 if binary else 3, last), x, y, criterion)
    assert codes_of(report) == set()
    metrics = report.checks[0].metrics
    assert metrics["loss_ratio"] < init_check.INIT_LOSS_RATIO
    assert metrics["expected_loss"] == pytest.approx(math.log(2 if binary else 3), rel=1e-6)


def test_log_softmax_into_cross_entropy_is_only_info():
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    report = run_on(_classifier(3, nn.LogSoftmax(dim=1)), x, y, nn.CrossEntropyLoss())
    finding = only(report, "output-activation-mismatch")
    assert finding.severity == "info" and finding.where == "3"
    assert report.checks[0].status == "pass"


class FunctionalSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return F.softmax(self.fc(x), dim=1).view(len(x), 3)  # seen through the view


def test_functional_softmax_in_forward():
    torch.manual_seed(0)
    report = run_on(FunctionalSoftmax(), torch.randn(64, 8), torch.randint(0, 3, (64,)), nn.CrossEntropyLoss())
    finding = only(report, "output-activation-mismatch")
    assert finding.where is None  # the model's own forward applied it
    assert "the model's forward" in finding.message


def test_regression_loss_skips_init_loss_with_a_reason():
    torch.manual_seed(0)
    report = run_on(_classifier(1), torch.randn(64, 8), torch.randn(64, 1))
    assert codes_of(report) == set()
    assert "MSELoss" in report.checks[0].metrics["not_checked"]["init-loss"]


# --------------------------------------------------------------------------- batch dependency

class RootMix(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x)
        return self.b(h.view(8, -1).t().reshape(-1, 8))  # meant h; the transpose mixes rows


class TokenMix(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.rnn = nn.GRU(8, 16)  # sequence-first
        self.head = nn.Linear(16, 3)

    def forward(self, tokens):
        e = self.embed(tokens)  # (N, T, E)
        n, t, d = e.shape
        out, _ = self.rnn(e.view(t, n, d))  # the bug: e.transpose(0, 1)
        return self.head(out[-1])


def test_mix_in_the_root_forward_is_located_between_modules():
    torch.manual_seed(0)
    report = run_on(RootMix(), torch.randn(64, 8), torch.randint(0, 3, (64,)))
    finding = only(report, "batch-dependency")
    assert finding.where is None
    assert (finding.evidence["after"], finding.evidence["before"]) == ("a", "b")


def test_token_models_are_probed_through_the_embedding():
    torch.manual_seed(0)
    tokens, y = torch.randint(0, 50, (64, 12)), torch.randint(0, 3, (64,))
    finding = only(run_on(TokenMix(), tokens, y), "batch-dependency")
    assert finding.evidence["input"] == "embeddings"
    assert finding.evidence["other_samples_leaking"] > 0


class HeadsView(nn.Module):
    """QANet's self-attention (bench/real_bugs/batch_mixing_heads_view.py): per-head Linears,
    the heads stacked (heads, N, T, d) and merged with `view` (the bug) or permute + view."""

    def __init__(self, permute: bool, heads=4, d=8):
        super().__init__()
        self.permute, self.heads, self.d = permute, heads, d
        self.q = nn.ModuleList(nn.Linear(heads * d, d) for _ in range(heads))
        self.v = nn.ModuleList(nn.Linear(heads * d, d) for _ in range(heads))

    def forward(self, x):
        n, t, _ = x.shape
        stacked = torch.stack([torch.softmax(self.q[i](x) @ x[..., :self.d].transpose(1, 2), -1) @ self.v[i](x)
                               for i in range(self.heads)])
        if self.permute:
            return stacked.permute(1, 2, 0, 3).reshape(n, t, -1)
        return stacked.view(n, t, -1)  # sample b's row is head b*heads//N's, samples of other rows


class HeadsReader(nn.Module):
    def __init__(self, permute: bool):
        super().__init__()
        self.embed = nn.Linear(6, 32)
        self.attention = HeadsView(permute)
        self.out = nn.Linear(32, 2)

    def forward(self, x):
        h = self.embed(x)
        return self.out((h + self.attention(h)).mean(1))


def test_a_mix_inside_a_modules_forward_is_put_at_that_module_not_a_child():
    """The probed sample's row comes from one head: the other heads' q/v Linears get no gradient
    from it at all, and must not read as "only this sample comes out" (it named `attention.q.0`)."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 5, 6), torch.randint(0, 2, (64,))
    finding = only(run_on(HeadsReader(permute=False), x, y), "batch-dependency")
    assert finding.where == "attention"
    assert finding.evidence["after"].startswith("attention.")  # a head's Linear: the last seen mixed
    torch.manual_seed(0)
    healthy = run_on(HeadsReader(permute=True), x, y)
    assert "batch-dependency" not in codes_of(healthy)
    assert healthy.checks[0].metrics["batch_leak_ratio"] == 0


class CausalMix(nn.Module):
    """An RNN run along the batch axis: sample i sees samples 0..i-1 only (item 7)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(6, 16)  # (time, batch, features) by default; fed (batch, time, features)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def test_a_causal_mix_along_the_batch_is_found_on_the_last_sample():
    torch.manual_seed(0)
    x, y = torch.randn(64, 5, 6), torch.randint(0, 3, (64,))
    finding = only(run_on(CausalMix(), x, y), "batch-dependency")
    ev = finding.evidence
    assert finding.where == "rnn" and ev["probed_samples"] == [0, 8, 15]
    assert ev["sample"] == 15 and ev["other_samples_leaking"] >= 10  # samples 0..14 feed sample 15
    assert "sample 15's output depends on" in finding.message
    # sample 0 alone, as the probe used to look, sees no other sample
    model = CausalMix().eval()
    xb = x[:16].clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(xb)[0].sum(), xb)
    assert grad[1:].abs().max().item() == 0.0


class RelativeBias(nn.Module):
    """T5's relative attention bias: an Embedding of (seq, seq) position buckets, built by the
    model from arange, whose first dimension equals the batch size when seq == batch (item 13)."""

    def __init__(self, vocab=40, d=16, seq=16):
        super().__init__()
        self.tokens = nn.Embedding(vocab, d)
        self.bias = nn.Embedding(2 * seq, 1)
        self.out = nn.Linear(d, 3)
        self.seq = seq

    def forward(self, ids):  # (N, seq)
        positions = torch.arange(self.seq)
        buckets = positions[None, :] - positions[:, None] + self.seq  # (seq, seq)
        scores = self.bias(buckets).squeeze(-1)  # (seq, seq): shared by every sample
        h = self.tokens(ids)  # (N, seq, d)
        attended = torch.softmax(scores, -1) @ h  # each sample attends over its own tokens
        return self.out(attended.mean(1))


def test_an_embedding_of_positions_shaped_like_the_batch_is_not_an_input():
    torch.manual_seed(0)
    ids, y = torch.randint(0, 40, (64, 16)), torch.randint(0, 3, (64,))
    report = run_on(RelativeBias(), ids, y)  # batch 16 = seq 16
    init = report.checks[0]
    assert "batch-dependency" not in codes_of(report), report.findings
    assert init.metrics["batch_leak_ratio"] == 0 and "batch-dependency" not in init.metrics.get("not_checked", {})


# --------------------------------------------------------------------------- discipline

def test_model_left_as_found_and_deterministic():
    setup = load_sample("batch_mixing_cnn")
    before = {k: v.clone() for k, v in setup.model.state_dict().items()}
    reports = [run_checks(setup, ["init"], device="cpu", seed=3)]
    after = setup.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert setup.model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in setup.model.modules())
    # a fresh build (the sample's loader carries its own shuffling generator): the same numbers
    reports.append(run_checks(load_sample("batch_mixing_cnn"), ["init"], device="cpu", seed=3))
    assert reports[0].checks[0].metrics == reports[1].checks[0].metrics
    assert [f.to_dict() for f in reports[0].findings] == [f.to_dict() for f in reports[1].findings]


# --------------------------------------------------------------------------- activations read from values (item 6)

class LogOfSoftmax(nn.Module):
    """torch.log(softmax(x)): log-probabilities whose graph ends in a Log node, not LogSoftmax."""

    def __init__(self, log=True, manual=False):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        self.log, self.manual = log, manual

    def forward(self, x):
        z = self.fc(x)
        p = z.exp() / z.exp().sum(1, keepdim=True) if self.manual else torch.softmax(z, 1)
        return torch.log(p) if self.log else p


def test_log_of_softmax_into_nll_is_read_as_log_probabilities():
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    report = run_on(LogOfSoftmax(), x, y, nn.NLLLoss())
    assert codes_of(report) == set(), report.findings
    metrics = report.checks[0].metrics
    assert metrics["final_activation"] == "log_softmax"
    assert metrics["loss_ratio"] < init_check.INIT_LOSS_RATIO  # init-loss judged on ln 3, as it should


def test_a_hand_written_softmax_into_nll_is_still_found_by_its_values():
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    finding = only(run_on(LogOfSoftmax(log=False, manual=True), x, y, nn.NLLLoss()), "output-activation-mismatch")
    assert finding.evidence["final_activation"] == "softmax" and finding.evidence["activation_from_values"]
    assert "probabilities (rows in [0, 1] summing to 1) by its values" in finding.message
    # raw logits into NLLLoss stay a mismatch: their rows are not distributions
    raw = only(run_on(_classifier(3), x, y, nn.NLLLoss()), "output-activation-mismatch")
    assert raw.evidence["final_activation"] == "none (logits)" and not raw.evidence["activation_from_values"]


def test_values_alone_never_turn_raw_logits_into_a_distribution():
    g = torch.Generator().manual_seed(0)
    for scale in (0.01, 1.0, 100.0):
        logits = torch.randn(64, 10, generator=g) * scale
        assert init_check._activation_from_values(logits, "nll") is None
        assert init_check._activation_from_values(torch.relu(logits[:, :1]), "bce") is None  # exact zeros
    assert init_check._activation_from_values(torch.log_softmax(torch.randn(64, 1000), 1), "nll") == "log_softmax"
    assert init_check._activation_from_values(torch.sigmoid(torch.randn(64, 1)), "bce") == "sigmoid"


# --------------------------------------------------------------------------- a constant first layer (item 10)

def test_zero_weights_make_the_first_layer_constant():
    report = run_checks_on("zero_init_mlp", ["init"])
    finding = only(report, "bad-init")
    ev = finding.evidence
    assert finding.where == "0" and ev["first_std"] == 0.0 and ev["layers_after"] == 1
    x = first_batch("zero_init_mlp").args[0]
    assert ev["input_std"] == pytest.approx(x.std(0).mean().item(), rel=1e-5)
    assert f"its input's {ev['input_std']:.3g}" in finding.message
    assert "exactly the same for every sample" in finding.message


class BroadcastQuery(nn.Module):
    """A Linear applied to a learned query shared by every sample (DETR-style): its output is
    constant over the batch because its input is, which is no init bug."""

    def __init__(self):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 16))
        self.q = nn.Linear(16, 16)
        self.k = nn.Linear(8, 16)
        self.mid = nn.Linear(16, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        q = self.q(self.query.expand(len(x), -1))  # the same row for every sample
        return self.out(torch.relu(self.mid(torch.relu(self.k(x)) * q)))


def test_a_layer_constant_because_its_input_is_stays_quiet():
    torch.manual_seed(0)
    report = run_on(BroadcastQuery(), torch.randn(64, 8), torch.randint(0, 3, (64,)))
    assert "bad-init" not in codes_of(report), report.findings
    assert report.checks[0].metrics["signal_std"]["q"] == 0.0
