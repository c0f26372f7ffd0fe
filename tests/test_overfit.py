"""overfit, and the one shared training run that overfit, grads and nan read."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from conftest import HEALTHY, codes_of, load_sample, only, run_checks_on, seeded_loader

from nndoctor.checks import overfit
from nndoctor.engine.runner import run_checks
from nndoctor.engine.session import Session
from nndoctor.probes import train_run as instrument
from nndoctor.target import Setup

RUN_CHECKS = ["nan", "grads", "overfit"]



# The healthy samples are silent for all three checks that read the shared run. Their
# runs do not depend on --seed (no dropout; the loaders shuffle with their own generator),
# so seeds 1-4 are checked on the fast samples, where a regression would show anyway.
@pytest.mark.parametrize("name,seed", [(n, 0) for n in HEALTHY]
                         + [(n, s) for n in ("xor", "mlp") for s in range(1, 5)])
@pytest.mark.slow
def test_healthy_samples_are_silent(name, seed):
    report = run_checks_on(name, RUN_CHECKS, seed=seed)
    loud = [(f.code, f.where, f.message) for f in report.findings if f.severity in ("warning", "error")]
    assert loud == []
    assert [c.status for c in report.checks] == ["pass"] * 3
    metrics = {c.name: c.metrics for c in report.checks}
    assert metrics["overfit"]["best_final_loss"] < overfit.DEFAULTS["threshold"]
    assert metrics["overfit"]["first_loss"] > 10 * metrics["overfit"]["best_final_loss"]
    assert len(metrics["overfit"]["losses"]) == 100 == metrics["overfit"]["steps_done"]
    assert metrics["nan"]["first_nonfinite_step"] is None


def test_seed_does_not_change_a_healthy_run():
    losses = [run_checks_on("xor", ["overfit"], seed=s).checks[0].metrics["losses"] for s in (0, 3)]
    assert losses[0] == losses[1]


def _count_forwards(setup: Setup) -> list:
    """The model's training forward passes (with gradient): not the run's forward-only
    activation scan of the trained weights."""
    calls = []
    setup.model.register_forward_hook(lambda *args: calls.append(1) if torch.is_grad_enabled() else None)
    return calls


def test_check_runs_one_shared_training_run():
    setup = load_sample("mlp")
    calls = _count_forwards(setup)
    report = run_checks(setup, RUN_CHECKS, {"overfit": {"steps": 15}}, device="cpu")
    assert [c.name for c in report.checks if c.status in ("pass", "fail", "warning")] == RUN_CHECKS
    # one run of overfit.steps, not one per check; plus the one recorded forward that grads
    # reads for the positions each layer is applied at (probes.forward_record, shared with init)
    assert len(calls) == 15 + 1
    assert len(report.checks[2].metrics["losses"]) == 15


def test_each_check_alone_runs_the_same_length():
    for name in RUN_CHECKS:
        setup = load_sample("xor")
        calls = _count_forwards(setup)
        run_checks(setup, [name], {"overfit": {"steps": 12}}, device="cpu")
        assert len(calls) == 12, name


def test_nan_steps_of_its_own_make_a_second_run():
    setup = load_sample("xor")
    calls = _count_forwards(setup)
    run_checks(setup, RUN_CHECKS, {"overfit": {"steps": 12}, "nan": {"steps": 5}}, device="cpu")
    assert len(calls) == 12 + 5


def test_run_leaves_the_model_and_optimizer_as_found():
    setup = load_sample("mlp")
    before = {k: v.clone() for k, v in setup.model.state_dict().items()}
    opt_before = setup.optimizer.state_dict()
    run_checks(setup, ["overfit"], {"overfit": {"steps": 5}}, device="cpu")
    after = setup.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert setup.optimizer.state_dict()["state"] == opt_before["state"] == {}
    assert all(p.grad is None for p in setup.model.parameters())


def test_loss_not_decreasing_with_a_tiny_lr():
    setup = load_sample("mlp")
    setup.optimizer = torch.optim.SGD(setup.model.parameters(), lr=1e-6)
    report = run_checks(setup, ["overfit"], {}, device="cpu")
    (finding,) = report.findings
    assert finding.code == "loss-not-decreasing" and finding.severity == "error"
    assert finding.where is None
    assert 0 <= finding.evidence["relative_drop"] < overfit.MIN_RELATIVE_DROP
    assert finding.evidence["first_loss"] == pytest.approx(report.checks[0].metrics["losses"][0])


def test_cannot_overfit_through_a_one_unit_bottleneck():
    torch.manual_seed(0)
    x, y = torch.randn(64, 20), torch.randint(0, 10, (64,))
    model = nn.Sequential(nn.Linear(20, 1), nn.Linear(1, 10))  # 10 classes through one number
    setup = Setup(model=model, train_loader=seeded_loader(x, y, 64),
                  optimizer=torch.optim.Adam(model.parameters(), lr=1e-2))
    report = run_checks(setup, ["overfit"], {}, device="cpu")
    assert codes_of(report) == {"cannot-overfit"}
    evidence = report.findings[0].evidence
    assert evidence["best_final_loss"] > 0.1 and evidence["relative_drop"] >= overfit.MIN_RELATIVE_DROP


def test_regression_threshold_is_relative_to_the_first_loss():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = 100 * x @ torch.randn(8, 1)  # targets in the hundreds: MSE starts near 1e5
    model = nn.Linear(8, 1)
    setup = Setup(model=model, train_loader=seeded_loader(x, y),
                  optimizer=torch.optim.Adam(model.parameters(), lr=5.0))
    report = run_checks(setup, ["overfit"], {}, device="cpu")
    metrics = report.checks[0].metrics
    assert metrics["relative_threshold"] is True
    assert metrics["first_loss"] > 1e4 and metrics["best_final_loss"] > 0.1  # above 0.1 absolute...
    assert metrics["best_final_loss"] < 0.1 * metrics["first_loss"]  # ...but far below, relatively
    assert report.findings == []


def test_threshold_and_steps_settings():
    report = run_checks_on("xor", ["overfit"], settings={"overfit": {"steps": 3, "threshold": 0.1}})
    assert report.checks[0].metrics["steps"] == 3
    assert codes_of(report) & {"cannot-overfit", "loss-not-decreasing"}  # 3 steps: nowhere near
    report = run_checks_on("xor", ["overfit"], settings={"overfit": {"steps": 3, "threshold": 10}})
    assert report.findings == []


def test_a_run_stopped_by_nan_is_left_to_the_nan_check():
    report = run_checks_on("log_relu_net", ["overfit"])
    (result,) = report.checks
    assert result.status == "skipped" and "NaN/Inf at step 1, before any update" in result.reason
    assert report.findings == []


# --------------------------------------------------------------------------- slow but healthy

def _keras_mlp(lr: float) -> Setup:
    """Issue 13 item 1: Keras-tutorial init (normal, sigma 0.05) at a small Adam LR."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 20, generator=g)
    y = (x @ torch.randn(20, 10, generator=g)).argmax(1)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=0.05)
            nn.init.zeros_(layer.bias)
    return Setup(model=model, train_loader=seeded_loader(x, y, 64),
                 optimizer=torch.optim.Adam(model.parameters(), lr=lr))


def test_a_slow_healthy_model_gets_the_steps_it_needs():
    report = run_checks(_keras_mlp(3e-4), ["overfit"], {}, device="cpu")
    metrics = report.checks[0].metrics
    assert report.findings == []
    assert metrics["losses"][99] > 1.0  # far above 0.1 after the SPEC's 100 steps...
    assert instrument.DEFAULT_STEPS < metrics["steps_done"] <= instrument.EXTEND_CAP
    assert metrics["best_final_loss"] <= 0.1 and metrics["extended"]  # ...memorised with more


def test_still_falling_at_the_cap_is_memorising_slowly_not_an_error():
    report = run_checks(_keras_mlp(2e-4), ["overfit"], {}, device="cpu")
    metrics = report.checks[0].metrics
    assert report.findings == [] and report.checks[0].status == "pass"
    assert metrics["steps_done"] == instrument.EXTEND_CAP and metrics["best_final_loss"] > 0.1
    assert "memorising slowly" in metrics["memorising_slowly"]
    assert instrument.still_falling(metrics["losses"])


def test_a_plateau_stops_the_extension_early_and_cannot_overfit():
    torch.manual_seed(0)
    x, y = torch.randn(64, 20), torch.randint(0, 10, (64,))
    model = nn.Sequential(nn.Linear(20, 1), nn.Linear(1, 10))
    setup = Setup(model=model, train_loader=seeded_loader(x, y, 64),
                  optimizer=torch.optim.Adam(model.parameters(), lr=1e-2))
    report = run_checks(setup, ["overfit"], {}, device="cpu")
    finding = only(report, "cannot-overfit")
    assert report.checks[0].metrics["steps_done"] <= instrument.DEFAULT_STEPS + 2 * instrument.EXTEND_WINDOW
    assert "stopped falling" in finding.message


def test_max_steps_equal_to_steps_runs_exactly_those():
    report = run_checks(_keras_mlp(3e-4), ["overfit"], {"overfit": {"steps": 100, "max_steps": 100}},
                        device="cpu")
    assert report.checks[0].metrics["steps_done"] == 100 and report.checks[0].metrics["extended"] is None


def test_a_model_own_mse_is_judged_relative_to_its_first_loss():
    report = run_checks_on("own_mse_regressor", ["overfit"])
    metrics = report.checks[0].metrics
    assert metrics["relative_threshold"] is True and report.findings == []
    assert metrics["best_final_loss"] > 0.1  # above the absolute threshold: judged relatively


@pytest.mark.parametrize("target,expected", [
    (torch.tensor([[0.5], [1.25]]), True),  # float targets with fractions: regression
    (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), False),  # 0/1 multi-label targets
    (torch.tensor([3, 1]), False),  # class labels
])
def test_regression_inferred_from_the_targets_for_a_model_own_loss(target, expected):
    class OwnLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)

        def forward(self, inputs, labels=None):
            return {"loss": self.linear(inputs).sum(), "logits": self.linear(inputs)}

    batches = [{"inputs": torch.randn(2, 2), "labels": target}]
    session = Session(Setup(model=OwnLoss(), train_loader=batches), device="cpu")
    assert session.uses_model_loss and overfit.is_regression(session) is expected
