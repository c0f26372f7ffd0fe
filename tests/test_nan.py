"""nan: the first NaN/Inf of the shared run, the module and op that made it."""

from __future__ import annotations

import json

import torch
import torch.nn as nn
from conftest import codes_of, load_sample, run_checks_on, sample_path, seeded_loader

from nndoctor.engine.runner import run_checks
from nndoctor.engine.session import Session
from nndoctor.probes import train_run as instrument
from nndoctor.target import Setup

RUN_CHECKS = ["nan", "grads", "overfit"]



def _nonfinite(report):
    found = [f for f in report.findings if f.code == "non-finite"]
    assert len(found) == 1, [(f.code, f.where) for f in report.findings]
    return found[0]


def _line_of(name: str, text: str) -> int:
    with open(sample_path(name), encoding="utf-8") as fh:
        return next(i for i, line in enumerate(fh, 1) if text in line)


def test_log_of_relu_is_found_in_forward_with_its_op():
    report = run_checks_on("log_relu_net", RUN_CHECKS)
    finding = _nonfinite(report)
    assert codes_of(report) == {"non-finite"}  # overfit and grads have nothing to judge
    assert finding.where == "features" and finding.severity == "error"
    assert finding.evidence["kind"] == "forward" and finding.evidence["op"] == "log"
    assert finding.evidence["value"] == "-inf" and finding.evidence["step"] == 0
    assert "`log`" in finding.message and "`features`" in finding.message
    assert finding.source[0].endswith("log_relu_net.py")
    assert finding.source[1] == _line_of("log_relu_net", "return torch.log(")


def test_sqrt_at_zero_is_found_in_backward():
    report = run_checks_on("sqrt_backward_net", RUN_CHECKS)
    finding = _nonfinite(report)
    assert codes_of(report) == {"non-finite"}
    assert finding.where == "distance"
    assert finding.evidence["kind"] == "backward" and finding.evidence["op"] == "sqrt"
    assert 0 < finding.evidence["loss"] < 10  # the forward pass and the loss were finite
    assert finding.evidence["last_finite_losses"] == [finding.evidence["loss"]]
    assert finding.evidence["parameters"] == ["encoder.0.weight", "encoder.0.bias",
                                              "encoder.2.weight", "encoder.2.bias"]
    assert finding.source[1] == _line_of("sqrt_backward_net", "return torch.sqrt(")
    assert "finite" in finding.message and "`sqrt`" in finding.message


def test_a_diverging_lr_ends_in_inf_after_some_steps():
    report = run_checks_on("nan_lr_mlp", RUN_CHECKS)
    finding = _nonfinite(report)
    assert codes_of(report) == {"non-finite", "exploding-gradient"}
    assert finding.evidence["step"] >= 3  # not at the first step: a short run is needed
    assert finding.evidence["scope"] == "loss" and finding.where is None
    losses = finding.evidence["last_finite_losses"]
    assert losses[-1] > 1e6 * losses[0]  # the loss grew geometrically first
    # a shorter watch misses it: many NaNs appear only after some steps
    short = run_checks_on("nan_lr_mlp", ["nan"], settings={"nan": {"steps": 2}})
    assert short.findings == [] and short.checks[0].metrics["steps_done"] == 2


def test_localisation_reruns_only_the_failing_step():
    session = Session(load_sample("nan_lr_mlp"), device="cpu", seed=0)
    run = instrument.shared_run(session)
    # the steps taken, the failing one, and its single traced re-run: no anomaly mode per step
    assert run.forward_passes == run.steps_done + 2
    assert run.nonfinite.step == run.steps_done


class _RootDivision(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 2)

    def forward(self, x):
        h = self.body(x)
        return h / (h - h)  # division by an exact zero, in the model's own forward


class _MaskedThenLog(nn.Module):
    """A causal-masked Transformer layer (its -inf mask is intended) before a log(0)."""

    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.gate = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        h = self.layer(x, src_mask=mask, is_causal=True)
        return self.head(torch.log(self.gate(h)).mean(1))


def test_an_op_in_the_root_forward_and_a_division():
    torch.manual_seed(0)
    setup = Setup(model=_RootDivision(), train_loader=seeded_loader(torch.randn(16, 4), torch.randn(16, 2)))
    finding = _nonfinite(run_checks(setup, ["nan"], {"overfit": {"steps": 3}}, device="cpu"))
    assert finding.where is None and finding.evidence["scope"] == "model"
    assert finding.evidence["op"] in ("div", "/") and "the model's own forward" in finding.message


def test_intended_infinities_of_an_attention_mask_are_not_blamed():
    torch.manual_seed(0)
    setup = Setup(model=_MaskedThenLog(), train_loader=seeded_loader(torch.randn(16, 5, 8),
                                                               torch.randint(0, 3, (16,))))
    finding = _nonfinite(run_checks(setup, ["nan"], {"overfit": {"steps": 3}}, device="cpu"))
    assert finding.evidence["op"] == "log" and finding.where is None  # log is in the root's forward


class _BucketsThenSqrt(nn.Module):
    """T5's relative-position buckets: log(0) = -inf for the distance 0, cast to an integer and
    discarded by a where (by design); later a sqrt of a negative, the real NaN."""

    def __init__(self):
        super().__init__()
        self.buckets = nn.Embedding(8, 4)
        self.body = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        distance = torch.arange(x.shape[1]).abs()
        large = (torch.log(distance.float()) * 2).to(torch.long).clamp(0, 7)  # -inf at 0: dropped
        bucket = torch.where(distance < 2, distance, large)
        h = self.body(x + self.buckets(bucket))
        return self.head(torch.sqrt(h - 10).mean(1))  # the NaN that reaches the loss


def test_a_non_finite_value_every_later_op_drops_is_not_blamed():
    torch.manual_seed(0)
    setup = Setup(model=_BucketsThenSqrt(), train_loader=seeded_loader(torch.randn(16, 5, 4),
                                                                 torch.randint(0, 3, (16,))))
    finding = _nonfinite(run_checks(setup, ["nan"], {"overfit": {"steps": 3}}, device="cpu"))
    assert finding.evidence["op"] == "sqrt" and finding.evidence["kind"] == "forward"


def test_non_finite_inputs_are_named_as_such():
    x = torch.randn(16, 4)
    x[3, 1] = float("nan")
    setup = Setup(model=nn.Linear(4, 2), train_loader=seeded_loader(x, torch.randn(16, 2), batch_size=16))
    finding = _nonfinite(run_checks(setup, ["nan"], {"overfit": {"steps": 3}}, device="cpu"))
    assert finding.evidence["kind"] == "input" and finding.where is None
    assert "inputs" in finding.message


def test_healthy_transformer_with_a_causal_mask_is_silent():
    class Causal(_MaskedThenLog):
        def forward(self, x):
            mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
            return self.head(self.layer(x, src_mask=mask, is_causal=True).mean(1))

    torch.manual_seed(0)
    setup = Setup(model=Causal(), train_loader=seeded_loader(torch.randn(16, 5, 8), torch.randint(0, 3, (16,))))
    report = run_checks(setup, ["nan"], {"overfit": {"steps": 10}}, device="cpu")
    assert report.findings == [] and report.checks[0].metrics["steps_done"] == 10


def test_cli_nan_fails_the_gate_with_the_json_where():
    from typer.testing import CliRunner

    from nndoctor.cli import app

    result = CliRunner().invoke(app, ["nan", f"{sample_path('log_relu_net')}:build", "--format", "json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    (finding,) = report["findings"]
    assert finding["code"] == "non-finite" and finding["where"] == "features"
    assert finding["evidence"]["op"] == "log" and finding["evidence"]["value"] == "-inf"
