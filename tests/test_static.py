"""The `static` check: the ten setup-mistake codes, before any step.

Each broken sample gets its code at its `where` with the numbers measured directly on the
same batches; the healthy samples stay silent; and so do the healthy setups that look like
the bugs: BatchNorm's constant affine init, a zero-initialised residual branch or LoRA
adapter, shared (tied) parameters, ModuleList/ParameterList/buffers, binary and multi-label
targets, padded token labels, integer-valued regression targets, imbalanced but shuffled
classes, soft labels, nn.Dropout, a sampling (VAE-style) forward, attention over one key.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import HEALTHY, codes_of, only, run_checks_on, seeded_loader
from torch.utils.data import DataLoader, TensorDataset

from nndoctor.checks import static
from nndoctor.engine.runner import run_checks
from nndoctor.engine.session import Session
from nndoctor.target import Setup

SAMPLES = {  # sample -> (code, where)
    "mse_onehot_mlp": ("loss-task-mismatch", None),
    "single_softmax_net": ("single-unit-softmax", "head.1"),
    "sigmoid_regression_mlp": ("output-range-mismatch", "3"),
    "unscaled_target_mlp": ("unscaled-targets", "train_loader"),
    "broadcast_loss_mlp": ("shape-broadcast", "2"),
    "collapsed_labels_mlp": ("constant-targets", "train_loader"),
    "functional_dropout_net": ("dropout-in-eval", "block"),
    "list_layers_mlp": ("unregistered-module", "hidden"),
    "sorted_loader_mlp": ("unshuffled-data", "train_loader"),
    "constant_init_mlp": ("symmetric-init", "0"),
}


def static_on(model, x, y, criterion=None, batch_size=32, shuffle=True, loader=None):
    setup = Setup(model=model, criterion=criterion,
                  train_loader=loader if loader is not None else
                  (seeded_loader(x, y, batch_size) if shuffle else DataLoader(TensorDataset(x, y), batch_size)))
    return run_checks(setup, ["static"], device="cpu")


def quiet(report):
    assert [(f.code, f.where, f.message) for f in report.findings] == []
    assert all(c.status == "pass" for c in report.checks), [(c.name, c.status, c.reason) for c in report.checks]


def targets_of(name):
    from conftest import load_sample
    return torch.cat([b.target for b in Session(load_sample(name), device="cpu").batches(static.SCAN_BATCHES)])


# --------------------------------------------------------------------------- broken samples

@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_broken_sample_found_at_its_where(name):
    code, where = SAMPLES[name]
    report = run_checks_on(name, ["static"])
    finding = only(report, code)
    assert finding.where == where and finding.check == "static"
    assert codes_of(report) == {code}


def test_numbers_are_the_batches_own():
    y = targets_of("unscaled_target_mlp").double()
    ev = only(run_checks_on("unscaled_target_mlp", ["static"]), "unscaled-targets").evidence
    assert ev["mean"] == pytest.approx(y.mean().item()) and ev["std"] == pytest.approx(y.std().item())
    assert ev["rms"] == pytest.approx(y.square().mean().sqrt().item()) and ev["rms"] > static.TARGET_RMS_LIMIT

    y = targets_of("sigmoid_regression_mlp")
    ev = only(run_checks_on("sigmoid_regression_mlp", ["static"]), "output-range-mismatch").evidence
    assert ev["outside"] == int(((y < 0) | (y > 1)).sum()) and ev["targets"] == y.numel()
    assert (ev["low"], ev["high"], ev["activation"]) == (0.0, 1.0, "sigmoid")


def test_broadcast_names_both_shapes():
    finding = only(run_checks_on("broadcast_loss_mlp", ["static"]), "shape-broadcast")
    assert finding.evidence["output_shape"] == [32, 1] and finding.evidence["target_shape"] == [32]
    assert finding.evidence["broadcast_shape"] == [32, 32] and "(32, 32)" in finding.message


def test_unshuffled_compares_batches_with_the_dataset():
    ev = only(run_checks_on("sorted_loader_mlp", ["static"]), "unshuffled-data").evidence
    assert ev["classes"] == 4 and ev["sampler"] == "SequentialSampler"
    assert min(ev["batch_majority_share"]) > 0.7 and ev["excess"] > static.UNSHUFFLED_EXCESS


def test_dropout_difference_measured_and_rng_restored():
    from conftest import load_sample
    setup = load_sample("functional_dropout_net")  # build() seeds the RNG itself
    before = torch.get_rng_state()
    finding = only(run_checks(setup, ["static"], device="cpu"), "dropout-in-eval")
    assert finding.evidence["p"] == 0.5 and finding.evidence["max_difference"] > 0
    assert torch.equal(torch.get_rng_state(), before)


def test_unregistered_counts_the_missing_values():
    finding = only(run_checks_on("list_layers_mlp", ["static"]), "unregistered-module")
    assert finding.evidence["items"] == ["hidden[0]", "hidden[1]"] and finding.evidence["values"] == 2 * (64 * 64 + 64)


@pytest.mark.parametrize("name", HEALTHY + ["transformer_encoder"])
def test_healthy_samples_are_quiet(name):
    quiet(run_checks_on(name, ["static"]))


# --------------------------------------------------------------------------- symmetric-init

def _classification(n=256, features=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    return x, (x @ torch.randn(features, classes, generator=g)).argmax(1)


class Residual(nn.Module):
    """A residual MLP whose branch ends in a zero-initialised Linear (zero_init_residual)."""

    def __init__(self, width=32):
        super().__init__()
        self.stem = nn.Linear(12, width)
        self.branch = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
        nn.init.zeros_(self.branch[2].weight)
        nn.init.zeros_(self.branch[2].bias)
        self.norm = nn.BatchNorm1d(width)  # weight 1, bias 0: constant, and fine
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.head(self.norm(h + self.branch(h)))


def test_zero_init_residual_branch_and_head_are_not_symmetric():
    torch.manual_seed(0)
    model = Residual()
    nn.init.zeros_(model.head.weight)  # a zero-initialised classifier: the loss tells its units apart
    quiet(static_on(model, *_classification()))


def test_zero_init_lora_adapter_is_not_symmetric():
    torch.manual_seed(0)
    base, down, up = nn.Linear(12, 16), nn.Linear(12, 2, bias=False), nn.Linear(2, 16, bias=False)
    nn.init.zeros_(up.weight)  # LoRA's B starts at zero

    class Lora(nn.Module):
        def __init__(self):
            super().__init__()
            self.base, self.down, self.up, self.head = base, down, up, nn.Linear(16, 4)

        def forward(self, x):
            return self.head(torch.relu(self.base(x) + self.up(self.down(x))))

    quiet(static_on(Lora(), *_classification()))


def test_all_zero_init_found_and_no_gradient_names_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    for layer in model[:4]:
        if isinstance(layer, nn.Linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
    x, y = _classification()
    setup = Setup(model=model, train_loader=seeded_loader(x, y))
    report = run_checks(setup, ["static", "grads"], device="cpu")
    finding = only(report, "symmetric-init")
    assert finding.where == "0" and finding.evidence["grad_max"] == 0 and finding.evidence["layers"] == ["0", "2"]
    stuck = [f for f in report.findings if f.code == "no-gradient"]
    assert stuck and all("symmetric-init" in f.message and f.evidence["cause"] == "symmetric-init" for f in stuck)


def test_single_unit_softmax_explains_no_gradient():
    report = run_checks_on("single_softmax_net", ["static", "grads"])
    stuck = only(report, "no-gradient")
    assert "single-unit-softmax" in stuck.message and "`head.1`" in stuck.message
    assert ".detach()" not in stuck.message


def test_no_gradient_keeps_its_message_without_a_static_cause():
    stuck = only(run_checks_on("unused_layer_net", ["grads"]), "no-gradient")
    assert ".detach()" in stuck.message and stuck.evidence["cause"] is None


# --------------------------------------------------------------------------- unregistered-module

def test_registered_containers_shared_and_derived_tensors_are_quiet():
    torch.manual_seed(0)

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 16)
            self.blocks = nn.ModuleList([nn.Linear(16, 16) for _ in range(2)])
            self.named = nn.ModuleDict({"a": nn.Linear(16, 16)})
            self.scales = nn.ParameterList([nn.Parameter(torch.ones(16))])
            self.register_buffer("mask", torch.ones(16))
            self.out = nn.Linear(16, 50, bias=False)
            self.out.weight = self.embed.weight  # tied
            self.order = [self.blocks[0], self.blocks[1]]  # plain references to registered layers
            self.proj = torch.nn.utils.weight_norm(nn.Linear(16, 16))  # weight: a derived plain tensor

        def forward(self, tokens):
            h = self.embed(tokens).mean(1) * self.mask
            for layer in self.order:
                h = torch.relu(layer(h))
            h = self.proj(self.named["a"](h)) * self.scales[0]
            return self.out(h)

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 50, (128, 6), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # weight_norm's deprecation
        model = Tied()
    quiet(static_on(model, tokens, tokens[:, 0]))


def test_plain_tensor_parameter_used_in_forward_found_unused_layer_not():
    torch.manual_seed(0)

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(12, 4)
            self.scale = torch.ones(4, requires_grad=True)  # the bug: not an nn.Parameter
            self.spare = [nn.Linear(4, 4)]  # unregistered but never used: harmless

        def forward(self, x):
            return self.linear(x) * self.scale

    finding = only(static_on(Scaled(), *_classification()), "unregistered-module")
    assert finding.where == "scale" and finding.evidence["values"] == 4 and "plain attribute" in finding.message


# --------------------------------------------------------------------------- targets and losses

def test_binary_multilabel_and_bounded_regressions_are_quiet():
    torch.manual_seed(0)
    x, _ = _classification()
    g = torch.Generator().manual_seed(1)
    binary = (x[:, :1] > 0).float()
    quiet(static_on(nn.Sequential(nn.Linear(12, 1), nn.Sigmoid()), x, binary, nn.BCELoss()))
    multi = (torch.rand(256, 5, generator=g) < 0.3).float()
    quiet(static_on(nn.Linear(12, 5), x, multi, nn.BCEWithLogitsLoss()))
    unit = torch.sigmoid(x[:, :1])  # a regression target in (0, 1) under a sigmoid
    quiet(static_on(nn.Sequential(nn.Linear(12, 1), nn.Sigmoid()), x, unit, nn.MSELoss()))
    positive = x[:, :1].abs()  # non-negative targets under a ReLU
    quiet(static_on(nn.Sequential(nn.Linear(12, 1), nn.ReLU()), x, positive, nn.MSELoss()))


def test_integer_valued_regression_targets_are_not_class_labels():
    torch.manual_seed(0)
    x, _ = _classification()
    counts = torch.poisson(torch.exp(x[:, :1] * 0.5)).float()  # counts 0, 1, 2, ...
    quiet(static_on(nn.Linear(12, 1), x, counts, nn.MSELoss()))


def test_class_labels_regressed_by_one_output_warned():
    torch.manual_seed(0)
    x, y = _classification()
    finding = only(static_on(nn.Linear(12, 1), x, (y + 1).float().unsqueeze(1), nn.MSELoss()), "loss-task-mismatch")
    assert finding.severity == "warning" and finding.evidence["classes"] == 4
    assert (finding.evidence["min_label"], finding.evidence["max_label"]) == (1, 4)
    assert sum(finding.evidence["shares"]) == pytest.approx(1.0)


def test_class_indices_into_mse_found():
    torch.manual_seed(0)
    x, y = _classification()
    finding = only(static_on(nn.Linear(12, 4), x, y.float().unsqueeze(1), nn.MSELoss()), "loss-task-mismatch")
    assert finding.evidence["targets"] == "class indices" and finding.evidence["max_label"] == 3


def test_cross_entropy_soft_labels_quiet_continuous_found():
    torch.manual_seed(0)
    x, y = _classification()
    soft = F.one_hot(y, 4).float() * 0.9 + 0.025  # label smoothing: rows of probabilities
    quiet(static_on(nn.Linear(12, 4), x, soft, nn.CrossEntropyLoss()))
    continuous = x[:, :4] * 3  # regression values given to a classification loss
    finding = only(static_on(nn.Linear(12, 4), x, continuous, nn.CrossEntropyLoss()), "loss-task-mismatch")
    assert finding.evidence["targets"] == "continuous"


def test_hand_written_loss_broadcast_found():
    torch.manual_seed(0)
    x, _ = _classification()
    finding = only(static_on(nn.Linear(12, 1), x, x[:, 0], lambda o, t: ((o - t) ** 2).mean()),
                   "shape-broadcast")
    assert finding.evidence["broadcast_shape"] == [32, 32] and finding.evidence["pytorch_warning"] is None


def test_padded_token_labels_and_imbalanced_shuffled_classes_are_quiet():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 30, (128, 8), generator=g)
    labels = tokens.roll(-1, 1)
    labels[:, 3:] = -100  # padding
    model = nn.Sequential(nn.Embedding(30, 16), nn.Linear(16, 30))
    quiet(static_on(model, tokens, labels, nn.CrossEntropyLoss(), loader=[(tokens[i:i + 16], labels[i:i + 16])
                                                                        for i in range(0, 128, 16)]))
    x, _ = _classification(n=512)
    rare = (torch.rand(512, generator=g) < 0.05).long()  # 5% positives, shuffled
    quiet(static_on(nn.Linear(12, 2), x, rare))


def test_shuffled_constant_looking_batches_of_a_sorted_list_loader():
    torch.manual_seed(0)
    x, y = _classification(n=512)
    order = torch.argsort(y, stable=True)
    batches = [(x[order][i:i + 32], y[order][i:i + 32]) for i in range(0, 512, 32)]
    report = static_on(nn.Linear(12, 4), None, None, loader=batches)
    assert codes_of(report) == {"unshuffled-data"}  # not constant-targets: later batches hold the rest


# --------------------------------------------------------------------------- dropout and softmax

def test_dropout_modules_sampling_and_one_key_attention_are_quiet():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.drop = nn.Linear(12, 16), nn.Dropout(0.5)
            self.attention = nn.MultiheadAttention(16, 2, dropout=0.1, batch_first=True)
            self.mu, self.head = nn.Linear(16, 16), nn.Linear(16, 4)

        def forward(self, x):
            h = self.drop(torch.relu(self.stem(x))).unsqueeze(1)  # a sequence of one token
            h, _ = self.attention(h, h, h)  # softmax over a single key: fine inside attention
            h = F.dropout(h.squeeze(1), 0.2, training=self.training)
            z = self.mu(h) + 0.1 * torch.randn_like(h)  # a sampled latent, by design random
            return self.head(z)

    quiet(static_on(Net(), *_classification()))


def test_a_loss_fn_setup_is_traced_through_its_own_call():
    torch.manual_seed(0)
    x, y = _classification()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = [nn.Linear(12, 12)]  # the bug, seen through the loss_fn's call
            self.head = nn.Linear(12, 4)

        def forward(self, x):
            return self.head(F.dropout(torch.relu(self.blocks[0](x)), 0.3))

    setup = Setup(model=Net(), train_loader=seeded_loader(x, y),
                  loss_fn=lambda model, batch: F.cross_entropy(model(batch[0]), batch[1]))
    report = run_checks(setup, ["static"], device="cpu")
    assert {(f.code, f.where) for f in report.findings} == {("unregistered-module", "blocks"),
                                                             ("dropout-in-eval", None)}
