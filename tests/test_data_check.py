"""The `data` check: non-finite values, out-of-range labels, unnormalised inputs.

Each broken sample gets its code (and nothing else from data/init); the healthy
samples stay silent; the numbers are checked against counts made directly on the
same batches; the thresholds are probed with inputs that must not warn
([0, 1] images, one-hot, [-1, 1] audio) and ones that must.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import codes_of, load_sample, only, run_checks_on
from torch.utils.data import DataLoader, TensorDataset

from nndoctor.checks import data as data_check
from nndoctor.engine.runner import run_checks
from nndoctor.engine.session import Session
from nndoctor.target import Setup


def scanned_batches(name: str, seed: int = 0) -> list:
    """The batches the data check scans, fetched by a fresh Session the same way."""
    return Session(load_sample(name), device="cpu", seed=seed).batches(data_check.SCAN_BATCHES)



def run_on(model, x, y, criterion=None, checks=("data",), batch_size=16):
    setup = Setup(model=model, train_loader=DataLoader(TensorDataset(x, y), batch_size=batch_size),
                  criterion=criterion)
    return run_checks(setup, list(checks), device="cpu")


@pytest.fixture(scope="module")
def broken():
    return {name: run_checks_on(name, ["data", "init"])
            for name in ("label_overflow_mlp", "raw_pixels_cnn", "nan_data_mlp")}


# --------------------------------------------------------------------------- broken samples

@pytest.mark.slow
def test_label_overflow_found_before_the_loss_crashes(broken):
    report = broken["label_overflow_mlp"]
    finding = only(report, "label-out-of-range")
    assert finding.severity == "error" and finding.check == "data"
    assert finding.where == "network.2"  # the 10-wide output layer
    labels = torch.cat([b.target for b in scanned_batches("label_overflow_mlp")])
    ev = finding.evidence
    assert ev["classes"] == 10 and ev["max_label"] == int(labels.max()) == 12 and ev["min_label"] == 0
    assert ev["out_of_range"] == int((labels >= 10).sum()) > 0
    assert ev["labels"] == labels.numel()
    # the init check computes the loss, which crashes on these labels: skipped, naming the cause
    init = next(c for c in report.checks if c.name == "init")
    assert init.status == "skipped" and "out of bounds" in init.reason
    assert init.reason.startswith("cannot run until label-out-of-range is fixed")
    assert codes_of(report) == {"label-out-of-range"}


def test_raw_pixels_found_with_their_scale(broken):
    report = broken["raw_pixels_cnn"]
    finding = only(report, "unnormalized-input")
    assert finding.severity == "warning" and finding.where is None
    x = torch.cat([b.args[0] for b in scanned_batches("raw_pixels_cnn")]).double()
    ev = finding.evidence
    assert ev["min"] == 0 and ev["max"] == 255
    assert ev["mean"] == pytest.approx(x.mean().item(), rel=1e-5)
    assert ev["std"] == pytest.approx(x.std().item(), rel=1e-5)
    assert ev["rms"] == pytest.approx(x.square().mean().sqrt().item(), rel=1e-5) and ev["rms"] > 100
    # per-channel statistics: the values for transforms.Normalize(mean, std)
    assert ev["channel_mean"] == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), rel=1e-5)
    assert ev["channel_std"] == pytest.approx(x.transpose(0, 1).reshape(3, -1).std(1).tolist(), rel=1e-5)
    assert codes_of(report) == {"unnormalized-input"}


def test_nan_data_counted_per_batch(broken):
    report = broken["nan_data_mlp"]
    finding = only(report, "data-non-finite")
    assert finding.severity == "error" and finding.where is None
    batches = scanned_batches("nan_data_mlp")
    per_batch = [int(torch.isnan(b.args[0]).sum()) for b in batches]
    ev = finding.evidence
    assert ev["tensor"] == "inputs"
    assert ev["nan"] == sum(per_batch) == 7  # 8 batches of 64 cover all 512 rows: every NaN seen
    assert ev["inf"] == 0
    assert ev["batches"] == [i for i, n in enumerate(per_batch) if n]
    assert ev["first_batch"] == ev["batches"][0]
    # the scale statistics skip the NaNs instead of becoming NaN themselves
    x = torch.cat([b.args[0] for b in batches]).double()
    scale = next(c for c in report.checks if c.name == "data").metrics["input_scale"]["inputs"]
    assert scale["mean"] == pytest.approx(x[~x.isnan()].mean().item(), rel=1e-5)
    assert scale["rms"] == pytest.approx(x[~x.isnan()].square().mean().sqrt().item(), rel=1e-5)
    assert codes_of(report) == {"data-non-finite"}


# The healthy samples (seeds 0-4, data and init together, sharing one forward pass) are in
# tests/test_init_check.py::test_healthy_samples_stay_silent.


# --------------------------------------------------------------------------- unnormalized-input bounds

@pytest.mark.parametrize("make_x", [
    lambda g: torch.rand(64, 3, 8, 8, generator=g),  # ToTensor images in [0, 1]
    lambda g: F.one_hot(torch.randint(0, 10, (64,), generator=g), 10).float(),  # one-hot
    lambda g: (torch.rand(64, 20, generator=g) > 0.7).float(),  # binary features
    lambda g: torch.sin(torch.linspace(0, 400, 64 * 256)).reshape(64, 256),  # audio in [-1, 1]
    lambda g: torch.randn(64, 12, generator=g) * 3 + 2,  # roughly standardised, off by a little
], ids=["unit-images", "one-hot", "binary", "audio", "near-standard"])
def test_unit_scale_inputs_do_not_warn(make_x):
    g = torch.Generator().manual_seed(0)
    x = make_x(g)
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 3))
    report = run_on(model, x, torch.randint(0, 3, (64,), generator=g))
    assert codes_of(report) == set()
    assert report.checks[0].metrics["input_scale"]["inputs"]["rms"] <= data_check.RMS_LIMIT


def test_one_raw_column_in_standardised_features_is_named():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 30, generator=g)
    x[:, 7] = 40 + 10 * torch.randn(64, generator=g)  # e.g. an age in years, never standardised
    report = run_on(nn.Linear(30, 3), x, torch.randint(0, 3, (64,), generator=g))
    finding = only(report, "unnormalized-input")
    assert finding.evidence["rms"] < data_check.RMS_LIMIT  # the whole tensor looks fine ...
    assert finding.evidence["worst_channel"] == 7 and finding.evidence["channels_over"] == 1  # ... column 7 not
    assert "worst: 7" in finding.message


def test_model_that_normalises_its_raw_input_is_not_warned():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 6, generator=g) * 1000
    report = run_on(nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 3)), x, torch.randint(0, 3, (64,), generator=g))
    assert codes_of(report) == set()
    assert report.checks[0].metrics["normalised_in_model"] == {"inputs": "0"}
    # the same data into a model that does not normalise it first: warned
    report = run_on(nn.Sequential(nn.Linear(6, 3)), x, torch.randint(0, 3, (64,), generator=g))
    assert "unnormalized-input" in codes_of(report)


def test_integer_token_ids_are_not_judged():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5000, (64, 10), generator=g)
    model = nn.Sequential(nn.Embedding(5000, 8), nn.Flatten(), nn.Linear(80, 3))
    report = run_on(model, tokens, torch.randint(0, 3, (64,), generator=g))
    assert codes_of(report) == set()
    assert "no float inputs" in report.checks[0].metrics["input_scale"]


# --------------------------------------------------------------------------- labels and non-finite targets

def test_negative_labels_and_ignore_index():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)
    ignored = y.clone()
    ignored[:6] = -100  # CrossEntropyLoss's default ignore_index: legitimate
    assert codes_of(run_on(nn.Linear(5, 3), x, ignored)) == set()
    negative = y.clone()
    negative[20:23] = -1
    finding = only(run_on(nn.Linear(5, 3), x, negative), "label-out-of-range")
    assert finding.evidence["out_of_range"] == 3 and finding.evidence["min_label"] == -1
    assert finding.evidence["batches"] == [1]  # rows 20-22 are in the second batch of 16


def test_out_of_range_labels_name_the_layer_whose_width_is_the_class_count():
    """Dense(1, softmax) on 7 classes (bench/real_bugs/single_unit_softmax_sparse_ce.py): the
    LogSoftmax module makes the output, but the user must widen the Linear before it."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randint(0, 7, (64,), generator=g)
    torch.manual_seed(0)
    narrow = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 1), nn.LogSoftmax(dim=1))
    finding = only(run_on(narrow, x, y, criterion=nn.NLLLoss()), "label-out-of-range")
    assert finding.where == "2" and finding.evidence["classes"] == 1
    assert "the output `2` has 1 classes" in finding.message
    # a bare Linear output is named itself, as before
    assert only(run_on(nn.Sequential(nn.Linear(5, 3)), x, y), "label-out-of-range").where == "0"
    wide = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 7), nn.LogSoftmax(dim=1))
    assert codes_of(run_on(wide, x, y, criterion=nn.NLLLoss())) == set()


def test_class_dimension_of_dense_outputs():
    """(N, C, H, W) outputs with (N, H, W) targets: C is dim 1, as CrossEntropyLoss reads it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 5, 5, generator=g)
    fine = torch.randint(0, 4, (32, 5, 5), generator=g)
    assert codes_of(run_on(nn.Conv2d(3, 4, 1), x, fine)) == set()
    finding = only(run_on(nn.Conv2d(3, 4, 1), x, fine + 2), "label-out-of-range")
    assert finding.evidence["classes"] == 4
    assert finding.evidence["out_of_range"] == int((fine + 2 >= 4).sum())


def test_labels_not_checked_for_non_classification_losses():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randint(0, 9, (64,), generator=g)
    report = run_on(nn.Linear(5, 1), x, y, criterion=lambda out, t: (out.squeeze(1) - t.float()).pow(2).mean())
    assert codes_of(report) == set()
    assert "not checked" in report.checks[0].metrics["labels"]


def test_inf_in_float_targets():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randn(64, 1, generator=g)
    y[40, 0] = math.inf
    y[41, 0] = -math.inf
    finding = only(run_on(nn.Linear(5, 1), x, y), "data-non-finite")
    ev = finding.evidence
    assert (ev["tensor"], ev["inf"], ev["nan"], ev["batches"]) == ("targets", 2, 0, [2])


def test_batches_setting_limits_the_scan():
    report = run_checks_on("mlp", ["data"], settings={"data": {"batches": 2}})
    assert report.checks[0].metrics["batches_scanned"] == 2
    assert report.checks[0].metrics["samples_scanned"] == 128


# --------------------------------------------------------------------------- BCE targets (issue 13, item 9)

def test_signed_labels_into_bce_are_found_and_the_loss_checks_skipped():
    report = run_checks_on("bce_signed_labels_mlp", ["data", "init", "nan"])
    finding = only(report, "label-out-of-range")
    assert finding.severity == "error" and finding.check == "data" and finding.where == "3"
    targets = torch.cat([b.target for b in scanned_batches("bce_signed_labels_mlp")])
    ev = finding.evidence
    assert ev["out_of_range"] == int((targets < 0).sum()) == 255 and ev["labels"] == targets.numel() == 512
    assert (ev["min_label"], ev["max_label"], ev["criterion"]) == (-1.0, 1.0, "BCELoss")
    assert "255 of 512 targets" in finding.message and "outside [0, 1]" in finding.message
    for check in report.checks[1:]:  # BCELoss raises on them: skipped, naming the finding
        assert check.status == "skipped" and check.reason.startswith("cannot run until label-out-of-range")
    assert codes_of(report) == {"label-out-of-range"}


@pytest.mark.parametrize("criterion", [nn.BCEWithLogitsLoss(), F.binary_cross_entropy_with_logits])
def test_bce_with_logits_targets_outside_0_1_are_found(criterion):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    y = torch.randint(0, 2, (64, 1), generator=g).float() * 2  # 0/2: meant 0/1
    finding = only(run_on(nn.Linear(5, 1), x, y, criterion=criterion), "label-out-of-range")
    assert finding.evidence["out_of_range"] == int((y > 1).sum()) and finding.evidence["max_label"] == 2.0


def test_soft_bce_targets_in_0_1_are_quiet():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.rand(64, 1, generator=g)  # soft labels
    report = run_on(nn.Sequential(nn.Linear(5, 1), nn.Sigmoid()), x, y, criterion=nn.BCELoss())
    assert codes_of(report) == set()
    labels = report.checks[0].metrics["labels"]
    assert labels["range"] == [0, 1] and 0 <= labels["min"] <= labels["max"] <= 1
