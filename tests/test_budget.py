"""--budget (SPEC §10): the plan fits, and the verdicts stay honest when the work is cut.

The rules are proved on fixed synthetic loss curves and made-up step times: no model
is trained here (the slow tests at the end run real samples through the CLI)."""

import math

import pytest

from nndoctor.engine import budget
from nndoctor.engine.budget import INCONCLUSIVE, Calibration, Item, first_crossing, judge, overfit_verdict, plan

ALL = ["size", "data", "static", "init", "nan", "grads", "dead", "overfit", "lr-find", "fit"]


def falling(steps, start=2.3, rate=0.05):
    """A healthy memorising curve: exponential decay towards 0."""
    return [start * math.exp(-rate * i) for i in range(steps)]


def plateau(steps, start=2.3, floor=1.2):
    return [floor + (start - floor) * math.exp(-0.2 * i) for i in range(steps)]


# ----------------------------------------------------------------- the asymmetric rules

def test_early_pass_as_soon_as_the_loss_crosses_its_target():
    curve = falling(40, rate=0.12)  # 2.3 -> 0.02 in 40 steps: memorised long before 100
    assert curve[-1] < 0.1
    assert overfit_verdict(curve, 0.1, full_steps=100, plateaued=False) == ("pass", None)
    crossing = first_crossing(falling(100, rate=0.12), 0.1)
    assert crossing is not None and crossing < 40  # a budgeted run could have stopped there


def test_no_early_fail_on_a_plateau_cut_short():
    curve = plateau(40)  # stuck at 1.2, far above 0.1, but only 40 of 100 steps
    status, reason = overfit_verdict(curve, 0.1, full_steps=100, plateaued=True)
    assert (status, reason) == ("skipped", INCONCLUSIVE)


def test_fail_on_full_evidence():
    assert overfit_verdict(plateau(100), 0.1, full_steps=100, plateaued=True) == ("fail", None)


def test_still_falling_when_cut_is_inconclusive_not_a_pass():
    slow = falling(60, rate=0.01)  # 2.3 -> 1.28, still falling
    assert overfit_verdict(slow, 0.1, full_steps=100, plateaued=False) == ("skipped", INCONCLUSIVE)


def test_judge_drops_work_dependent_findings_of_a_cut_check():
    item = Item("overfit", "steps", full=100, planned=40, seconds=4.0, minimum_s=1.0)
    status, reason, dropped = judge("overfit", "fail", ["cannot-overfit"], item, done=40)
    assert status == "skipped" and reason.startswith(INCONCLUSIVE) and dropped == ["cannot-overfit"]
    assert "40 of 100 steps" in reason


def test_judge_keeps_a_pass_resting_on_evidence_and_full_work_verdicts():
    item = Item("overfit", "steps", full=100, planned=40, seconds=4.0, minimum_s=1.0)
    assert judge("overfit", "pass", [], item, done=40, passed_by_evidence=True) == ("pass", None, [])
    assert judge("overfit", "pass", [], item, done=40)[0] == "skipped"  # no evidence: no pass
    assert judge("overfit", "fail", ["cannot-overfit"], item, done=100) == ("fail", None, [])


def test_judge_keeps_positive_evidence_however_little_was_done():
    item = Item("nan", "steps", full=100, planned=20, seconds=2.0, minimum_s=1.0)
    assert judge("nan", "fail", ["non-finite"], item, done=7) == ("fail", None, [])
    item = Item("overfit", "steps", full=100, planned=20, seconds=2.0, minimum_s=1.0)
    status, reason, dropped = judge("overfit", "fail", ["cannot-overfit", "no-gradient"], item, done=20)
    assert status == "fail" and dropped == ["cannot-overfit"] and INCONCLUSIVE in reason


def test_a_check_the_plan_did_not_cut_keeps_its_verdict():
    # a range test that stopped early at divergence, a loader shorter than the scan: not cut
    item = Item("lr-find", "points", full=100, planned=100, seconds=2.0, minimum_s=1.0)
    assert judge("lr-find", "warning", ["lr-too-high"], item, done=37) == ("warning", None, [])


def test_cut_fit_is_inconclusive_unless_it_found_nothing_work_dependent():
    item = Item("fit", "epochs", full=5, planned=2, seconds=2.0, minimum_s=1.0)
    assert judge("fit", "warning", ["underfitting"], item, done=2)[0] == "skipped"
    assert judge("fit", "pass", [], item, done=2)[0] == "skipped"


# ----------------------------------------------------------------- the plan

def test_generous_budget_plans_full_work_with_no_overrides():
    calib = Calibration(step_s=0.001, forward_s=0.0003, batches_per_epoch=10, val_batches=4)
    items = plan(300, calib, ALL)
    assert all(i.planned == i.full and not i.reason for i in items.values())
    assert all(not i.overrides for i in items.values())


def test_tight_budget_cuts_expensive_work_and_stays_within_it():
    calib = Calibration(step_s=0.2, forward_s=0.07, batches_per_epoch=20, val_batches=5)
    items = plan(15, calib, ALL)
    assert sum(i.seconds for i in items.values()) <= 15
    assert items["size"].planned == 1 and items["init"].planned == 1  # cheap ones full
    run = items["nan"]
    assert 0 < run.planned < 100 and run.overrides["overfit"]["steps"] == run.planned
    assert items["overfit"].planned == run.planned and items["overfit"].seconds == 0.0  # reads it
    assert items["fit"].planned == 0 and items["fit"].reason.startswith("needs ~")


def test_a_check_that_cannot_fit_its_minimum_is_skipped_with_needs():
    calib = Calibration(step_s=5.0, forward_s=1.5, batches_per_epoch=100, val_batches=10)
    items = plan(30, calib, ALL)
    assert items["nan"].planned == 0
    assert items["nan"].reason.startswith("needs ~34 s, ")  # 5 steps of 5 s, x1.35 (instrumented)
    assert items["lr-find"].reason.startswith("needs ~") and items["fit"].reason.startswith("needs ~")
    assert items["grads"].planned == 0 and items["overfit"].planned == 0


def test_cheap_checks_first_then_run_then_lr_then_fit():
    calib = Calibration(step_s=0.05, forward_s=0.02, batches_per_epoch=30, val_batches=8)
    items = plan(20, calib, ALL)
    assert items["nan"].planned == 100  # the shared run gets its full 100 steps first
    assert items["lr-find"].planned >= budget.MIN_LR_POINTS
    assert items["fit"].planned in (0, 2, 3, 4, 5)
    assert sum(i.seconds for i in items.values()) <= 20


def test_extension_cap_follows_the_time_left():
    calib = Calibration(step_s=0.05, forward_s=0.02, batches_per_epoch=30, val_batches=8)
    items = plan(12, calib, ["nan", "grads", "overfit"])
    cap = items["nan"].overrides["overfit"]["max_steps"]
    assert 100 <= cap < 500


def test_user_settings_set_the_full_work():
    calib = Calibration(step_s=0.001, forward_s=0.0003)
    items = plan(300, calib, ["overfit", "lr-find"], {"overfit": {"steps": 200}, "lr-find": {"num_iter": 50}})
    assert items["overfit"].full == 200 and items["lr-find"].full == 50


@pytest.mark.parametrize("left", [0.0, 3.0, 42.0])
def test_needs_text(left):
    assert budget.needs(40, left) == f"needs ~40 s, {budget._secs(left)} s left"


# ----------------------------------------------------------------- end to end

def test_cli_budget_reports_plan_and_line(tmp_path):
    import json

    from conftest import sample_path
    from typer.testing import CliRunner

    from nndoctor.cli import app

    result = CliRunner().invoke(app, ["check", sample_path("xor"), "--budget", "30", "--format", "json",
                                      "--only", "size,init,nan,overfit"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["plan"]) == {"size", "init", "nan", "overfit"}
    for entry in report["plan"].values():
        assert {"planned", "done", "seconds"} <= set(entry)
    assert report["plan"]["nan"]["done"] == {"steps": 100}
    assert report["budget"]["line"].startswith("budget 30 s: ")
    assert all(c["status"] != "error" for c in report["checks"])


def test_cli_budget_from_config_and_a_bad_budget(tmp_path, monkeypatch):
    import json

    from conftest import sample_path
    from typer.testing import CliRunner

    from nndoctor.cli import app

    monkeypatch.chdir(tmp_path)
    # without --budget (and no budget: in a config), no plan: nothing changes
    plain = json.loads(CliRunner().invoke(app, ["check", sample_path("xor"), "--format", "json",
                                                "--only", "size"]).stdout)
    assert "plan" not in plain and "budget" not in plain
    (tmp_path / "nndoctor.yaml").write_text(f"target: {sample_path('xor')}\nbudget: 20\nonly: [size, init]\n")
    result = CliRunner().invoke(app, ["check", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["budget"]["seconds"] == 20
    assert CliRunner().invoke(app, ["check", "--budget", "0"]).exit_code == 2


def _budgeted(name, seconds, seed=0):
    from conftest import load_sample

    from nndoctor import checks
    from nndoctor.engine.runner import run_checks

    return run_checks(load_sample(name), list(checks.CHECKS), {}, target=name, device="cpu", seed=seed,
                      budget=seconds)


def _broken():
    from test_samples import BROKEN
    return BROKEN


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_broken()))
def test_budget_30_still_finds_every_broken_samples_bug(name):
    code, where, _exit, _caused = _broken()[name]
    report = _budgeted(name, 30)
    found = {(f.code, f.where) for f in report.findings}
    assert (code, where) in found, (found, report.sections.get("budget"))
    assert all(c.status != "error" or c.exception is not None for c in report.checks), \
        [(c.name, c.reason) for c in report.checks]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["xor", "mlp", "high_lr_mlp", "memorising_mlp", "unused_layer_net"])
def test_generous_budget_gives_the_same_findings_as_none(name):
    from test_samples import full_check

    plain = {(f.code, f.where, f.severity) for f in full_check(name).findings}
    budgeted = _budgeted(name, 600)
    assert {(f.code, f.where, f.severity) for f in budgeted.findings} == plain
    assert all(not (e.get("planned") != e.get("full")) for e in budgeted.sections["plan"].values())
