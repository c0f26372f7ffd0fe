"""The Python API (SPEC §6): `nndoctor.diagnose` returns the report, displays in a
notebook, and leaves the model, optimizer, RNGs and thread count exactly as handed over."""

from __future__ import annotations

import io
import json
import os
import random
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import ROOT, load_sample
from rich.console import Console
from typer.testing import CliRunner

import nndoctor
from nndoctor.cli import app
from nndoctor.errors import ConfigError, TargetError, UsageError

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures", "limits"))
from state_probe import capture, differences  # noqa: E402

SPEC_KEYS = {"nndoctor", "target", "device", "seed", "seconds", "status", "checks", "findings"}
SPEC_CHECK_KEYS = {"name", "status", "seconds", "reason", "metrics"}
SPEC_FINDING_KEYS = {"code", "severity", "check", "where", "message", "evidence", "fix"}
CHEAP = ["size", "data", "init", "dead"]
# Short runs of the training checks: isolation does not depend on their length.
SHORT = {"overfit": {"steps": 12}, "lr-find": {"num_iter": 12}, "fit": {"epochs": 2}}


class Mixed(nn.Module):
    """BatchNorm (buffers, mode-dependent), Dropout (RNG, mode-dependent), a frozen layer."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1),
                                  nn.Linear(16, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)
        self.threads_seen: list = []  # torch's thread count during each forward pass

    def forward(self, x):
        self.threads_seen.append(torch.get_num_threads())
        return self.head(self.body(x))


def handed_over(mode: str):
    """A model mid-training, as a user hands it over: Adam with state after 2 steps,
    gradients of a third backward still in .grad, the first layer frozen, and `mode`'s
    train/eval flags."""
    torch.manual_seed(0)
    x, y = torch.randn(96, 6), torch.randint(0, 3, (96,))
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    val_loader = [(x[i:i + 16], y[i:i + 16]) for i in range(64, 96, 16)]
    model = Mixed()
    model.body[0].requires_grad_(False)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for xb, yb in loader[:2]:
        optimizer.zero_grad()
        criterion(model(xb), yb).backward()
        optimizer.step()
    criterion(model(loader[2][0]), loader[2][1]).backward()  # pending gradients, not applied
    if mode == "eval":
        model.eval()
    else:  # mixed: a frozen BatchNorm in eval mode inside a training model
        model.train()
        model.body[1].eval()
        model.head.eval()
    model.threads_seen.clear()
    return model, loader, criterion, optimizer, val_loader


@pytest.fixture
def user_threads(monkeypatch):
    """The user runs torch with 2 threads; nndoctor is told to use 1 during its run."""
    monkeypatch.setenv("NNDOCTOR_NUM_THREADS", "1")
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(previous)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eval", "mixed"])
def test_diagnose_leaves_everything_as_handed_over(mode, user_threads):
    model, loader, criterion, optimizer, val_loader = handed_over(mode)
    torch.manual_seed(1234)
    np.random.seed(77)
    random.seed(5)
    torch.rand(3), np.random.rand(2), random.random()  # states mid-stream, not fresh from a seed
    before = capture(model, optimizer)
    assert before["optimizer"]["state"] and before["grads"]["head.weight"] is not None
    assert before["grads"]["body.0.weight"] is None and not before["requires_grad"]["body.0.weight"]

    report = nndoctor.diagnose(model, loader, criterion, optimizer, val_loader, seed=3, device="cpu",
                               config=SHORT)

    assert differences(before, capture(model, optimizer)) == []
    assert [c.name for c in report.checks] == ["size", "data", "static", "init", "nan", "grads", "dead",
                                               "overfit", "lr-find", "fit"]
    crashed = {c.name: c.reason for c in report.checks if c.status in ("error", "skipped")}
    assert crashed == {}, crashed
    assert model.threads_seen and set(model.threads_seen) == {1}  # limited during the run ...
    assert torch.get_num_threads() == user_threads  # ... and the user's count put back
    # The optimizer still drives the model's own parameters, and they still train.
    assert optimizer.param_groups[0]["params"][0] is model.body[1].weight


def test_diagnose_restores_after_a_check_that_raises():
    model, loader, criterion, optimizer, _ = handed_over("mixed")
    calls = {"n": 0}

    def flaky_loss(output, target):
        calls["n"] += 1
        if calls["n"] > 3:  # raises mid-training, after some steps changed the weights
            raise RuntimeError("loss server went away")
        return criterion(output, target)

    before = capture(model, optimizer)
    report = nndoctor.diagnose(model, loader, flaky_loss, optimizer, checks=["overfit"], device="cpu")
    (check,) = report.checks
    assert check.status == "error" and check.reason.startswith("RuntimeError: loss server went away")
    assert differences(before, capture(model, optimizer)) == []


def test_target_api_matches_the_cli_json():
    report = nndoctor.diagnose(target="sample_models/mlp.py", checks=CHEAP, device="cpu")
    cli = CliRunner().invoke(app, ["check", "sample_models/mlp.py", "--only", ",".join(CHEAP),
                                   "--format", "json", "--device", "cpu"], catch_exceptions=False)
    assert cli.exit_code == 0
    ours, theirs = _without_timings(report.to_dict()), _without_timings(json.loads(cli.stdout))
    assert ours == theirs
    as_json = report.to_dict()
    assert SPEC_KEYS <= set(as_json) and as_json["status"] == report.status == "pass"
    assert all(set(c) == SPEC_CHECK_KEYS for c in as_json["checks"])
    assert json.loads(json.dumps(report.to_dict(), allow_nan=False)) == report.to_dict()
    assert report.exit_code() == 0
    assert ours["size"]["total_params"] == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10


@pytest.fixture(scope="module")
def dead_report():
    setup = load_sample("dead_relu_mlp")
    return setup, nndoctor.diagnose(setup.model, setup.train_loader, optimizer=setup.optimizer,
                                    checks=["data", "init", "dead"], device="cpu")


def test_model_api_matches_the_target_api(dead_report):
    _, report = dead_report
    by_target = nndoctor.diagnose(target="sample_models/dead_relu_mlp.py", checks=["data", "init", "dead"],
                                  device="cpu")
    ours, theirs = _without_timings(report.to_dict()), _without_timings(by_target.to_dict())
    assert ours.pop("target") is None and theirs.pop("target") == "sample_models/dead_relu_mlp.py"
    assert ours == theirs


def test_report_fields_and_exit_codes(dead_report):
    _, report = dead_report
    assert report.status == "warning"
    (finding,) = report.findings
    assert (finding.code, finding.where, finding.severity) == ("dead-neurons", "network.3", "warning")
    assert finding.evidence["dead_pct"] > 50
    assert set(finding.to_dict()) == SPEC_FINDING_KEYS
    assert [(c.name, c.status) for c in report.checks] == [("data", "pass"), ("init", "pass"),
                                                           ("dead", "warning")]
    assert report.exit_code() == 0 and report.exit_code("error") == 0
    assert report.exit_code(fail_on="warning") == 1 and report.exit_code("never") == 0
    with pytest.raises(ValueError):
        report.exit_code("warn")


def test_notebook_display(dead_report):
    _, report = dead_report
    html = report._repr_html_()
    assert html.lstrip().startswith("<!DOCTYPE html>") or "<pre" in html
    for text in ("dead-neurons", "network.3", "dead", "init"):
        assert text in html
    console = Console(record=True, width=100, file=io.StringIO())
    console.print(report)  # through Report.__rich__
    text = console.export_text()
    assert "dead-neurons" in text and "network.3" in text
    assert str(report).startswith("nndoctor report: warning (1 findings in 3 checks)")


def test_model_without_data_skips_the_data_checks():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    report = nndoctor.diagnose(model, checks=["data", "dead", "overfit"], device="cpu")
    assert {c.status for c in report.checks} == {"skipped"}
    assert all("no training data" in c.reason for c in report.checks)
    assert report.exit_code("warning") == 0


@pytest.mark.parametrize("call, error, words", [
    (lambda: nndoctor.diagnose(), UsageError, "needs a model or a target"),
    (lambda: nndoctor.diagnose(nn.Linear(2, 2), checks=["sise"]), UsageError, "unknown check 'sise'"),
    (lambda: nndoctor.diagnose(nn.Linear(2, 2), config={"overfit": {"stepz": 3}}), ConfigError,
     "unknown key overfit.stepz"),
    (lambda: nndoctor.diagnose("resnet50"), TargetError, "not an nn.Module"),
    (lambda: nndoctor.diagnose(target="sample_models/nope.py"), TargetError, "file not found"),
])
def test_bad_calls_raise_usage_errors(call, error, words):
    with pytest.raises(error, match=words.replace(".", r"\.")):
        call()


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value
