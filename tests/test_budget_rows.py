"""--budget's sub-batch (issue 18): when the whole first batch cannot afford the shared run's
full steps, it trains on `rows` of its samples. Failing to memorise 8 samples proves the bug
for 64, so a fail on full steps of a sub-batch is a fail; a pass says on how many samples;
cut short, it is skipped with the reason. The step times are made up (a fixed calibration),
the runs are real and small."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from conftest import load_sample, seeded_loader

from nndoctor.engine import budget
from nndoctor.engine.budget import INCONCLUSIVE, MIN_ROWS, Calibration, pick_rows, plan
from nndoctor.engine.runner import run_checks
from nndoctor.engine.session import Session, split_batch
from nndoctor.probes import train_run as instrument
from nndoctor.target import Setup

RUN = ["nan", "grads", "overfit"]
ALL = ["size", "data", "static", "init", "nan", "grads", "dead", "overfit", "lr-find", "fit"]


# ----------------------------------------------------------------- which rows

def _per_class(labels, keep):
    counts: dict = {}
    for i in keep:
        counts[labels[i]] = counts.get(labels[i], 0) + 1
    return counts


@pytest.mark.parametrize("rows", [4, 5, 8, 13])
def test_a_sub_batch_keeps_at_least_two_per_class(rows):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (64,), generator=g).tolist()
    keep = pick_rows(labels, 64, rows)
    assert len(keep) == rows and keep == sorted(set(keep))
    assert all(count >= 2 for count in _per_class(labels, keep).values())


def test_a_sub_batch_is_deterministic_and_ignores_the_rng():
    labels = [3, 1, 3, 0, 1, 2, 0, 2, 1, 3] * 6
    torch.manual_seed(1)
    first = pick_rows(labels, 60, 8)
    torch.manual_seed(2)
    assert pick_rows(labels, 60, 8) == first == [0, 1, 2, 3, 4, 5, 6, 7]


def test_a_class_with_one_sample_is_kept_alone_only_after_the_pairs():
    # classes 0 and 1 have pairs; 7, 8, 9 one sample each in the whole batch
    labels = [7, 0, 1, 8, 0, 1, 9, 0]
    assert pick_rows(labels, 8, 4) == [1, 2, 4, 5]
    assert pick_rows(labels, 8, 6) == [0, 1, 2, 4, 5, 7]  # then class 0's third, then 7
    # an odd slot never splits a class that has two: 3 + 3 samples, 5 rows
    keep = pick_rows([1, 1, 1, 2, 2, 2], 6, 5)
    assert all(c >= 2 for c in _per_class([1, 1, 1, 2, 2, 2], keep).values())


def test_without_class_labels_the_first_rows():
    assert pick_rows(None, 16, 4) == [0, 1, 2, 3]
    assert pick_rows([0, 1], 16, 4) == [0, 1, 2, 3]  # labels that are not one per sample
    assert pick_rows([0] * 8, 8, 8) == list(range(8))  # all of them


def test_session_sub_batch_indexes_every_per_sample_tensor():
    torch.manual_seed(0)
    x, y = torch.randn(32, 5), torch.randint(0, 4, (32,))
    session = Session(Setup(model=nn.Linear(5, 4), train_loader=seeded_loader(x, y, 32)), device="cpu")
    sub = session.sub_batch(8)
    first = session.first_batch  # shuffled by the loader
    keep = pick_rows(first.target.tolist(), 32, 8)
    assert sub.batch_size == 8 and torch.equal(sub.target, first.target[keep])
    assert torch.equal(sub.args[0], first.args[0][keep])
    assert session.sub_batch(8) is sub and session.sub_batch(None) is session.first_batch
    assert session.sub_batch(64) is session.first_batch
    # a dict batch (Hugging Face style): its labels pick the rows, every [batch, ...] tensor follows
    raw = {"input_ids": torch.arange(64).reshape(8, 8), "attention_mask": torch.ones(8, 8, dtype=torch.long),
           "labels": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), "scale": torch.ones(3)}
    session._batches = [split_batch(raw)]
    sub = session.sub_batch(4)
    assert sub.kwargs["input_ids"].shape == (4, 8) and sub.kwargs["labels"].tolist() == [0, 0, 1, 1]
    assert sub.kwargs["scale"].shape == (3,)  # not per sample: as it was


# ----------------------------------------------------------------- the plan

def _calib(step_s=1.0, rows=64, optimizer_s=0.0, **kw):
    return Calibration(step_s=step_s, forward_s=0.01, rows=rows, optimizer_s=optimizer_s, **kw)


def test_the_plan_trains_on_the_most_rows_whose_full_steps_fit():
    # 100 steps x 1.35 x (rows/64 s + 0.01 s) fit 20 s up to 8 rows
    items = plan(20, _calib(), RUN)
    run = items["nan"]
    assert (run.planned, run.rows, run.batch_rows) == (100, 8, 64)
    assert run.overrides["overfit"]["rows"] == 8 and run.seconds <= 20
    assert items["overfit"].rows == 8 and items["overfit"].seconds == 0.0  # it reads that run
    assert items["overfit"].to_dict()["rows"] == {"planned": 8, "full": 64}


def test_the_optimizer_step_does_not_shrink_with_the_rows():
    calib = _calib(optimizer_s=0.5)
    assert calib.step_at(64) == 1.0 and calib.step_at(32) == pytest.approx(0.75)
    calib.sub_rows, calib.sub_step_s = 8, 0.9  # a measured sub-batch step anchors the estimate
    assert calib.step_at(8) == 0.9 and calib.step_at(16) == pytest.approx(1.3)


def test_no_sub_batch_when_the_whole_batch_fits_or_is_too_small():
    assert plan(300, _calib(step_s=0.01), RUN)["nan"].rows is None  # full steps on the whole batch
    assert plan(20, _calib(rows=MIN_ROWS), RUN)["nan"].rows is None  # nothing smaller to take
    assert plan(20, _calib(rows=None), RUN)["nan"].rows is None  # no batch dimension seen


def test_the_whole_batch_cut_when_no_sub_batch_gets_full_steps():
    # 4 rows would cost 100 x 1.35 x (0.0625 x 10 + 0.01) = 86 s > 40 s: no full evidence on
    # any sub-batch, and the whole batch affords its 5-step minimum: the whole batch, cut
    run = plan(80, _calib(step_s=10.0), RUN)["nan"]
    assert run.rows is None and 5 <= run.planned < 100


def test_a_few_rows_for_the_minimum_when_the_whole_batch_cannot_afford_it():
    run = plan(40, _calib(step_s=10.0), RUN)["nan"]  # the whole batch: 5 steps are 68 s
    assert run.rows == MIN_ROWS and 5 <= run.planned < 100
    skipped = plan(3, _calib(step_s=10.0), RUN)["nan"]
    assert skipped.planned == 0 and skipped.reason.startswith("needs ~")


def test_a_sub_batch_goes_in_the_one_line():
    items = plan(20, _calib(), RUN)
    record = {n: {"status": "pass"} for n in RUN}
    assert "nan (on 8/64 samples)" in budget.summary_line(20, items, record)


# ----------------------------------------------------------------- verdicts on a sub-batch

@pytest.fixture
def slow_steps(monkeypatch):
    """Every training step on 64 rows 'takes' 1 s (and rows/64 s on fewer): the shared run's
    100 steps fit a 20 s budget on 8 rows only."""
    def calibrate(session, seconds):
        return Calibration(step_s=1.0, forward_s=0.001, rows=session.first_batch.batch_size)

    monkeypatch.setattr(budget, "calibrate", calibrate)
    monkeypatch.setattr(budget, "time_rows", lambda session, rows, seconds=0: rows / session.first_batch.batch_size)


def _labelled(model, lr=1e-2, optimizer=torch.optim.Adam, n=64, classes=4):
    torch.manual_seed(0)
    x, y = torch.randn(n, 20), torch.arange(n) % classes
    return Setup(model=model, train_loader=seeded_loader(x, y, n), optimizer=optimizer(model.parameters(), lr=lr))


def _check(setup, seconds=20, names=RUN):
    report = run_checks(setup, names, {}, device="cpu", budget=seconds)
    return report, {c.name: c for c in report.checks}


def test_a_fail_on_full_steps_of_a_sub_batch_is_a_fail(slow_steps):
    # SGD at 1e-6: the loss does not move in 100 steps on 8 of the 64 samples, so not on 64
    torch.manual_seed(0)
    setup = _labelled(nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4)), lr=1e-6,
                      optimizer=torch.optim.SGD)
    report, checks = _check(setup)
    assert report.sections["plan"]["overfit"]["rows"] == {"planned": 8, "full": 64}
    assert checks["overfit"].status == "fail"
    (finding,) = [f for f in report.findings if f.code == "loss-not-decreasing"]
    assert "8 of one batch's 64 samples" in finding.message
    assert "on 8 of 64 samples" in checks["overfit"].reason
    assert checks["overfit"].metrics["rows"] == 8 and len(checks["overfit"].metrics["losses"]) == 100


def test_a_pass_on_a_sub_batch_says_on_how_many_samples(slow_steps):
    torch.manual_seed(0)
    report, checks = _check(_labelled(nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))))
    assert all(checks[n].status == "pass" for n in RUN), [(c.name, c.status, c.reason) for c in report.checks]
    assert all("on 8 of 64 samples" in checks[n].reason for n in RUN)
    assert checks["overfit"].metrics["best_final_loss"] <= 0.1
    assert report.sections["budget"]["line"].startswith("budget 20 s: cut nan (on 8/64 samples)")


class Slow(nn.Module):
    """A forward that really takes `seconds` (the budget's clock is real)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        import time

        time.sleep(self.seconds)
        return x


def test_a_sub_batch_cut_short_is_skipped_not_failed(slow_steps):
    # 4 s: 4 rows are planned ~40 steps, not 100, and a real step takes 0.1 s: the run stops
    # before its time limit with the steps it took; a model that cannot memorise is inconclusive
    torch.manual_seed(0)
    setup = _labelled(nn.Sequential(Slow(0.1), nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4)), lr=1e-6,
                      optimizer=torch.optim.SGD)
    report, checks = _check(setup, seconds=4)
    entry = report.sections["plan"]["overfit"]
    assert entry["rows"]["planned"] == MIN_ROWS and 5 <= entry["planned"]["steps"] < 100
    assert 5 <= entry["done"]["steps"] < 100 and not entry.get("timed_out")
    assert checks["overfit"].status == "skipped" and checks["overfit"].reason.startswith(INCONCLUSIVE)
    assert not [f for f in report.findings if f.code in ("loss-not-decreasing", "cannot-overfit")]
    assert checks["overfit"].metrics["budget_inconclusive"] == ["loss-not-decreasing"]
    assert checks["nan"].status == "pass"  # no NaN in the steps it took: positive evidence only


def test_a_cut_run_that_turns_out_fast_takes_its_full_steps_and_may_fail(slow_steps):
    # planned ~40 steps from the (made-up) estimate, but the real steps are fast: the run goes
    # on to its full 100 before the time limit, and a fail on them is full evidence
    torch.manual_seed(0)
    setup = _labelled(nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4)), lr=1e-6,
                      optimizer=torch.optim.SGD)
    report, checks = _check(setup, seconds=4)
    entry = report.sections["plan"]["overfit"]
    assert entry["planned"]["steps"] < 100 and entry["done"]["steps"] == 100
    assert checks["overfit"].status == "fail"


def test_the_run_stops_at_its_soft_deadline():
    import time

    torch.manual_seed(0)
    setup = _labelled(nn.Sequential(Slow(0.05), nn.Linear(20, 4)))
    session = Session(setup, device="cpu")
    session.run_deadline = time.monotonic() + 0.5
    run = instrument.train_run(session, 100)
    assert run.stopped_by_time and 3 <= run.steps_done < 20 and len(run.losses) == run.steps_done


def test_without_budget_the_whole_batch():
    torch.manual_seed(0)
    setup = _labelled(nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4)))
    report = run_checks(setup, ["overfit"], {}, device="cpu")
    (check,) = report.checks
    assert "rows" not in check.metrics and check.reason is None and "plan" not in report.sections


def test_the_dead_check_reads_the_sub_batch_run(slow_steps):
    setup = load_sample("mlp")
    report, checks = _check(setup, seconds=20, names=["nan", "grads", "dead", "overfit"])
    assert checks["dead"].status != "error", checks["dead"].reason
    rows = report.sections["plan"]["nan"].get("rows")
    assert rows is None or rows["planned"] < rows["full"]
