"""`check --budget SECONDS` (SPEC §10): time real steps, plan each check's work to fit,
and keep the verdicts honest when the work is cut.

Three parts, the first two pure (no torch, no session: tests feed them numbers):

- `plan(seconds, calibration, names, settings)`: per check, how much of its work
  (overfit steps, LR range test points, fit epochs, scan batches) fits the time left,
  cheapest checks first; a check whose minimum does not fit is planned as skipped
  with `needs ~X s, Y s left`.
- `overfit_verdict(...)` / `judge(...)`: the asymmetric rules. A check passes as soon
  as its evidence shows it (the overfit loss crossed its target), fails only on full
  evidence (the unbudgeted amount of work), and is otherwise `skipped` with the reason
  `inconclusive in the time given`. The budget never makes an error.
- `calibrate(session)`: times one training step (forward, backward, optimizer) and
  one forward pass on the user's first batch.
- Sub-batches: when the shared training run cannot afford its minimum steps on the
  whole first batch, it trains on `rows` of its samples (`pick_rows`: deterministic, at
  least 2 per class, at least MIN_ROWS for BatchNorm's batch statistics). Failing to
  memorise 8 samples proves the bug for 64 (issue 18), so a `cannot-overfit` on full
  steps of a sub-batch is a full-evidence fail; a pass says "on 8 of 64 samples".

The runner applies them (`engine/runner.py`, the `--budget` block).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

INCONCLUSIVE = "inconclusive in the time given"
# The cost of each check, in training steps ("step") or forward passes without gradient
# ("forward") on the user's batch. Rough: they only have to rank checks and keep the total
# within the budget; the runner's hard stop (the time left) catches an estimate that is short.
SIZE_FORWARDS = 3  # torchinfo's pass, the FLOP counter's pass, the model's own summary
STATIC_STEPS = 1  # dropout-in-eval (2 forwards), batch-dependency (a backward per probed sample), ...
#                   measured: the bench's 1.1M CNN 1.35 s at a ~4 s step; mlp.py 0.08 s at 0.0098 s
INIT_STEPS = 2  # the initial loss and the per-layer signal scales: forwards with hooks (mlp: 0.02 s)
DATA_FORWARDS = 1  # the label range needs the model's output width: one forward for all batches
DATA_FORWARDS_PER_BATCH = 0.25  # then tensor statistics: BERT-base's token batches took 0.35 s for 3
#                                 (a 5.8 s forward), ResNet-50's 16x3x224x224 images 70 s for 4 (a
#                                 27.6 s forward, 2 cores at load 12): the larger
DEAD_FORWARDS = 8  # activations.SCAN_BATCHES (4) before training and 4 after the shared run
RUN_OVERHEAD = 1.35  # the shared run's step against a bare one: gradient norms every step, details
#                     every 10th (probes.train_run measured 1.24-1.33x on xor, 2 loaded cores)
STEP_OVERHEAD_S = 0.01  # per training step of the shared run, the range test and fit: Python-side
#                         bookkeeping a bare step does not pay (the bench's 10K MLP: 0.0006 s bare,
#                         ~0.009 s per step in the shared run and the range test, 2 loaded cores)
FIXED_OVERHEAD_S = 0.05  # per check: imports, hooks, bookkeeping
# Minimum work that can still give a verdict (below it a check is skipped, not run):
MIN_RUN_STEPS = 5  # enough for nan's and grads' evidence (a NaN, a missing or exploding gradient shows
#                    in the first steps: every broken sample's does); overfit then passes only by
#                    crossing its target, else it is inconclusive
MIN_LR_POINTS = 20  # a range test of 20 points over 8 decades is 2.5 points a decade
MIN_FIT_EPOCHS = 2  # overfitting needs two validation losses to see one rise
MIN_DATA_BATCHES = 1
# The fewest rows a sub-batch keeps. BatchNorm normalises with the batch's own statistics;
# below 4 samples they are degenerate (2 samples: every channel becomes +-1; the GroupNorm
# paper, Wu & He 2018, fig. 1, shows BatchNorm breaking down at 2 samples per batch) and a
# model could fail to memorise for that alone: 4 keeps a cannot-overfit about the model.
MIN_ROWS = 4
ROWS_PER_CLASS = 2  # issue 18: "keep at least 2 samples per class"
# A check may run past its estimate by this factor (estimates are rough) but never past
# the time left in the budget.
OVERRUN = 2.0
# Codes whose "found" depends on the amount of work: a cut check keeps them only on full
# evidence. Other codes are positive evidence seen at some step (a NaN, a parameter with no
# gradient) and stand however little was done.
WORK_DEPENDENT = {
    "overfit": ("cannot-overfit", "loss-not-decreasing"),
    "lr-find": ("lr-too-high", "lr-too-low"),
    "fit": ("overfitting", "underfitting"),
}
SHARED_RUN_CHECKS = ("nan", "grads", "overfit")  # they read one training run (probes.train_run)
# Planning order: cheap, fixed-cost checks first, then the shared run's base, then the
# LR range test, then fit, then the shared run's extension with whatever is left.
FLEXIBLE = ("nan", "grads", "overfit", "lr-find", "fit")  # their work divides: they get what fits
PRIORITY = ("size", "data", "static", "init", "dead", "nan", "grads", "overfit", "lr-find", "fit")


@dataclass
class Calibration:
    """Seconds per unit of work on the user's batch."""

    step_s: float  # one training step: forward, backward, optimizer.step
    forward_s: float  # one forward pass without gradient
    batches_per_epoch: Optional[int] = None  # len(train_loader), None if unknown
    val_batches: Optional[int] = None  # len(val_loader), None if unknown or absent
    seconds: float = 0.0  # what the calibration itself took
    rows: Optional[int] = None  # samples in the first batch (None: no batch dimension seen)
    optimizer_s: float = 0.0  # of step_s: optimizer.step alone (it does not shrink with the rows)
    sub_rows: Optional[int] = None  # a sub-batch step measured on this many rows ...
    sub_step_s: Optional[float] = None  # ... took this long (BudgetRun measures it once planned)

    def step_at(self, rows: Optional[int]) -> float:
        """One training step on `rows` of the first batch's samples: the optimizer's share is
        fixed, the forward and backward scale with the rows (anchored on a measured sub-batch
        step when there is one)."""
        if rows is None or self.rows is None or rows >= self.rows:
            return self.step_s
        opt = min(self.optimizer_s, self.step_s)
        if self.sub_step_s is not None and self.sub_rows:
            if rows == self.sub_rows:
                return self.sub_step_s
            per_row = max(self.sub_step_s - opt, 0.0) / self.sub_rows
        else:
            per_row = (self.step_s - opt) / self.rows
        return opt + per_row * rows


@dataclass
class Item:
    """One check's planned work."""

    name: str
    unit: str  # "steps", "points", "epochs", "batches", "passes"
    full: int  # the unbudgeted amount (its DEFAULTS, or the user's setting)
    planned: int  # 0: skipped
    seconds: float  # estimated seconds of the planned work
    minimum_s: float  # seconds of the least work that can give a verdict
    overrides: dict = field(default_factory=dict)  # settings for the check
    reason: Optional[str] = None  # why it is skipped (planned == 0)
    rows: Optional[int] = None  # the shared run trains on this many of the first batch's samples
    batch_rows: Optional[int] = None  # ... of this many (set only for a sub-batch)

    @property
    def cut(self) -> bool:
        return self.planned < self.full

    def to_dict(self) -> dict:
        entry: dict = {"planned": {self.unit: self.planned}, "full": {self.unit: self.full},
                       "estimated_seconds": round(self.seconds, 2)}
        if self.rows is not None:
            entry["rows"] = {"planned": self.rows, "full": self.batch_rows}
        return entry


@dataclass
class Work:
    """A check's work as a cost model: fixed_s + n * unit_s for n units, n in [minimum, full]."""

    unit: str
    full: int
    minimum: int
    unit_s: float
    fixed_s: float = FIXED_OVERHEAD_S
    key: Optional[str] = None  # the setting that sets n (None: not divisible)

    def seconds(self, n: int) -> float:
        return self.fixed_s + n * self.unit_s

    def most_within(self, seconds: float) -> int:
        """The most units that fit `seconds` (may be below the minimum)."""
        if self.unit_s <= 0:
            return self.full
        return max(0, min(self.full, int((seconds - self.fixed_s) / self.unit_s)))


def _setting(settings: dict, name: str, key: str, default: Any) -> Any:
    value = (settings.get(name) or {}).get(key)
    return default if value is None else value


def work_of(name: str, calib: Calibration, settings: dict, shared_paid: bool = False,
            rows: Optional[int] = None) -> Work:
    """The cost model of check `name` at its (user or default) settings. `shared_paid`: the
    shared training run is already done or planned for an earlier check: this one reads it.
    `rows`: the shared run trains on that many of the first batch's samples."""
    fwd = calib.forward_s
    step = calib.step_s + STEP_OVERHEAD_S
    if name == "size":
        return Work("passes", 1, 1, SIZE_FORWARDS * fwd)
    if name == "data":
        full = int(_setting(settings, "data", "batches", 8))
        return Work("batches", full, min(full, MIN_DATA_BATCHES), DATA_FORWARDS_PER_BATCH * fwd,
                    fixed_s=FIXED_OVERHEAD_S + DATA_FORWARDS * fwd, key="batches")
    if name == "static":
        return Work("passes", 1, 1, STATIC_STEPS * step)
    if name == "init":
        return Work("passes", 1, 1, INIT_STEPS * step)
    if name == "dead":
        return Work("passes", 1, 1, DEAD_FORWARDS * fwd)
    if name in SHARED_RUN_CHECKS:
        full = int(_setting(settings, "overfit", "steps", 100))
        if name == "nan" and _setting(settings, "nan", "steps", None) is not None:
            full = int(settings["nan"]["steps"])  # nan's own run, not the shared one
        elif shared_paid:
            return Work("steps", full, 0, 0.0)
        else:
            step = calib.step_at(rows) + STEP_OVERHEAD_S
        return Work("steps", full, min(full, MIN_RUN_STEPS), RUN_OVERHEAD * step, key="steps")
    if name == "lr-find":
        full = int(_setting(settings, "lr-find", "num_iter", 100))
        race = _setting(settings, "lr-find", "race_steps", None)
        per_point = step * (1.0 + (1.0 if race is None else float(race) / max(full, 1)))
        return Work("points", full, min(full, MIN_LR_POINTS), per_point, key="num_iter")
    if name == "fit":
        full = int(_setting(settings, "fit", "epochs", 5))
        batches = calib.batches_per_epoch or 1
        per_epoch = batches * step + (calib.val_batches or batches) * fwd * 2  # val, and train in eval mode
        return Work("epochs", full, min(full, MIN_FIT_EPOCHS), per_epoch, key="epochs")
    return Work("passes", 1, 1, step)  # a check added later: one step's worth


def plan(seconds: float, calib: Calibration, names: list, settings: Optional[dict] = None,
         shared_done: bool = False) -> dict:
    """{check: Item} for `names` within `seconds`. Cheap checks are served first at their
    full work; the shared training run, the LR range test and fit then get the most that
    fits, each at least its minimum or skipped; the shared run's extension (overfit's
    max_steps) gets what is left. `shared_done`: the shared run already ran."""
    settings = settings or {}
    left = float(seconds)
    items: dict = {}
    shared_paid, shared_steps = shared_done, None
    shared_rows = _setting(settings, "overfit", "rows", None)
    order = [n for n in PRIORITY if n in names] + [n for n in names if n not in PRIORITY]
    flexible = [n for n in order if n in FLEXIBLE]
    for name in order:
        own_nan_run = name == "nan" and _setting(settings, "nan", "steps", None) is not None
        runs_shared = name in SHARED_RUN_CHECKS and not own_nan_run and not shared_paid
        work = work_of(name, calib, settings, shared_paid, rows=shared_rows if runs_shared else None)
        minimum_s = work.seconds(work.minimum)
        if name in SHARED_RUN_CHECKS and shared_paid and work.unit_s == 0:
            # it reads the shared run planned (or done) for an earlier check: free, and as cut as it
            planned = work.full if shared_steps is None else shared_steps
            items[name] = Item(name, work.unit, work.full, planned, 0.0, 0.0, rows=_rows_of(shared_rows, calib),
                               batch_rows=calib.rows if _rows_of(shared_rows, calib) else None)
            continue
        if name in flexible:
            # the shared run (three checks read it) takes the most that fits; the LR range test
            # keeps fit's minimum in reserve and leaves it half of the rest
            later = flexible[flexible.index(name) + 1:]
            reserve = 0.0 if name in SHARED_RUN_CHECKS else sum(_minimum_s(n, calib, settings) for n in later)
            available = left - reserve
            if name == "lr-find" and "fit" in later:
                available = max(minimum_s, 0.5 * available)
            n = work.most_within(available) if available >= minimum_s else 0
            if runs_shared and n < work.full and shared_rows is None:
                # the whole first batch cannot afford the run's full steps: a sub-batch may
                sub = sub_batch_plan(name, calib, settings, available, whole_fits=n >= max(work.minimum, 1))
                if sub is not None:
                    shared_rows, work, n = sub
                    minimum_s = work.seconds(work.minimum)
                elif n < max(work.minimum, 1) and calib.rows and calib.rows > MIN_ROWS:
                    # neither fits: say what the least (MIN_ROWS rows) would need
                    least = work_of(name, calib, settings, rows=MIN_ROWS)
                    minimum_s = least.seconds(least.minimum)
                    items[name] = Item(name, work.unit, work.full, 0, 0.0, minimum_s,
                                       reason=f"{needs(minimum_s, left)} (on {MIN_ROWS} of the first batch's {calib.rows} samples)")
                    continue
        elif work.key:  # a fixed-cost check whose work divides (data's batches): what fits
            n = work.most_within(left)
        else:
            n = work.full if work.seconds(work.full) <= left else 0
        if n < max(work.minimum, 1) or minimum_s > left:
            items[name] = Item(name, work.unit, work.full, 0, 0.0, minimum_s, reason=needs(minimum_s, left))
            continue
        cost = work.seconds(n)
        item = Item(name, work.unit, work.full, n, cost, minimum_s)
        section = "overfit" if name in SHARED_RUN_CHECKS and not own_nan_run else name
        if work.key and n < work.full:
            item.overrides = {section: {work.key: n}}
            if name == "lr-find":
                item.overrides[section]["race_steps"] = n
        if runs_shared and _rows_of(shared_rows, calib):
            item.rows, item.batch_rows = shared_rows, calib.rows
            item.overrides.setdefault("overfit", {})["rows"] = shared_rows
        if name in SHARED_RUN_CHECKS and not own_nan_run:
            shared_paid, shared_steps = True, n
        items[name] = item
        left -= cost
    # The shared run's extension: overfit goes on past its steps while the loss still falls
    # (probes.train_run); under a budget only as far as the time left pays for.
    runner = next((items[n] for n in SHARED_RUN_CHECKS if n in items and items[n].seconds > 0), None)
    if runner is not None and calib.step_s > 0:
        cap = int(_setting(settings, "overfit", "max_steps", 500))
        per_step = RUN_OVERHEAD * (calib.step_at(runner.rows) + STEP_OVERHEAD_S)
        extra = max(0, min(cap - runner.planned, int(max(left, 0.0) / per_step)))
        if runner.planned + extra < cap:
            runner.overrides.setdefault("overfit", {})["max_steps"] = runner.planned + extra
            if runner.planned < runner.full:
                runner.overrides["overfit"]["steps"] = runner.planned
    return items


def sub_batch_plan(name: str, calib: Calibration, settings: dict, available: float,
                   whole_fits: bool = False) -> Optional[tuple]:
    """(rows, work, steps) of the shared run on a sub-batch of the first batch when the whole
    batch cannot afford its full steps, or None (the whole batch, cut, or skipped).

    Full evidence first: the most rows whose full steps fit (a cannot-overfit on them is a
    full-evidence fail: failing to memorise 8 samples proves the bug for 64). Else, when
    the whole batch affords the minimum, the whole batch, cut (a pass on it says more than
    one on a few rows; neither can fail). Else MIN_ROWS rows and the most steps that fit."""
    if not calib.rows or calib.rows <= MIN_ROWS:
        return None
    for rows in range(calib.rows - 1, MIN_ROWS - 1, -1):
        work = work_of(name, calib, settings, rows=rows)
        if work.seconds(work.full) <= available:
            return rows, work, work.full
    if whole_fits:
        return None
    work = work_of(name, calib, settings, rows=MIN_ROWS)
    n = work.most_within(available)
    return (MIN_ROWS, work, n) if n >= max(work.minimum, 1) else None


def _rows_of(rows: Optional[int], calib: Calibration) -> Optional[int]:
    """`rows` when it is a real sub-batch of the first batch, else None."""
    return rows if rows is not None and (calib.rows is None or rows < calib.rows) else None


def pick_rows(labels: Optional[list], n: int, rows: int) -> list:
    """Which of a batch's `n` samples a sub-batch of `rows` keeps (sorted indices; fewer than
    `rows` only when no whole class fits the last slot). Deterministic: no RNG.

    Without class labels: the first `rows`. With them (one label per sample): every class
    it keeps that has ROWS_PER_CLASS or more samples in the batch keeps at least that many
    (one sample of a class cannot show the model telling it from its neighbours), classes in
    order of first appearance; then the kept classes' further samples, then classes that have
    a single sample in the batch (they cannot have two anywhere)."""
    if rows >= n:
        return list(range(n))
    if labels is None or len(labels) != n:
        return list(range(rows))
    groups: dict = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    chosen: list = []
    kept = []
    for members in groups.values():
        if len(members) >= ROWS_PER_CLASS and len(chosen) + ROWS_PER_CLASS <= rows:
            chosen += members[:ROWS_PER_CLASS]
            kept.append(members)
    more = [i for members in kept for i in members[ROWS_PER_CLASS:]]
    singles = [members[0] for members in groups.values() if len(members) == 1]
    for i in sorted(more) + singles:
        if len(chosen) >= rows:
            break
        chosen.append(i)
    return sorted(chosen)


def _minimum_s(name: str, calib: Calibration, settings: dict) -> float:
    work = work_of(name, calib, settings, shared_paid=name in ("grads", "overfit"))
    return work.seconds(work.minimum)


def needs(minimum_s: float, left: float) -> str:
    return f"needs ~{_secs(minimum_s)} s, {_secs(max(left, 0.0))} s left"


def _secs(s: float) -> str:
    return f"{s:.0f}" if s >= 10 else f"{s:.1f}"


# --------------------------------------------------------------------------- verdicts

def overfit_verdict(losses: list, target: float, full_steps: int, plateaued: bool,
                    window: int = 5) -> tuple:
    """(status, reason) of a budgeted overfit run from its loss curve: `pass` as soon as the
    best of the last `window` losses is at or below `target` (however few steps); `fail`
    only with at least `full_steps` losses and a plateau (the unbudgeted rule's evidence);
    otherwise `skipped`, inconclusive."""
    if losses and min(losses[-window:]) <= target:
        return "pass", None
    if len(losses) >= full_steps and plateaued:
        return "fail", None
    return "skipped", INCONCLUSIVE


def first_crossing(losses: list, target: float, window: int = 5) -> Optional[int]:
    """The first step count at which the run could stop and pass (None: never)."""
    for end in range(1, len(losses) + 1):
        if min(losses[max(0, end - window):end]) <= target:
            return end
    return None


def judge(name: str, status: str, codes: list, item: Optional[Item], done: Optional[int],
          passed_by_evidence: bool = False) -> tuple:
    """(status, reason, codes to drop) for a check that ran under a budget.

    Full evidence is the unbudgeted amount of work (`item.full`) actually done. With less:
    a finding whose presence depends on the amount of work (WORK_DEPENDENT) is dropped and
    the check becomes `skipped: inconclusive in the time given` (unless other findings
    stand); a pass stands only when it rests on evidence seen (`passed_by_evidence`, e.g.
    the overfit loss crossed its target) or the check's work was not cut."""
    if item is None or not item.cut or done is None or done >= item.full:
        return status, None, []  # the plan did not cut it: its verdict is the unbudgeted one
    dependent = [c for c in codes if c in WORK_DEPENDENT.get(name, ())]
    others = [c for c in codes if c not in dependent]
    if others:
        return status, (f"{INCONCLUSIVE} for {', '.join(dependent)}" if dependent else None), dependent
    if dependent:
        return "skipped", f"{INCONCLUSIVE} ({done} of {item.full} {item.unit})", dependent
    if name in WORK_DEPENDENT and not passed_by_evidence:
        return "skipped", f"{INCONCLUSIVE} ({done} of {item.full} {item.unit})", []
    return status, None, []


def done_of(name: str, metrics: dict, sections: dict) -> Optional[int]:
    """How much of its work a check did, from its metrics (None: not measured)."""
    if name in ("nan", "grads", "overfit"):
        value = metrics.get("steps_done", metrics.get("steps"))
        if name == "grads":
            value = metrics.get("steps", value)
        return _int(value)
    if name == "lr-find":
        section = sections.get("lr_find") or {}
        losses = section.get("losses")
        if isinstance(losses, list) and losses:
            return len(losses)
        return _int(metrics.get("num_iter"))
    if name == "fit":
        return _int(metrics.get("epochs_done"))
    if name == "data":
        return _int(metrics.get("batches_scanned"))
    return 1


def _int(value: Any) -> Optional[int]:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def summary_line(budget: float, items: dict, report_plan: dict) -> str:
    """The one Rich line: `budget 30 s: full size, data; cut overfit (40/100 steps); skipped fit`
    (a sub-batch: `cut overfit (on 6/32 samples)`)."""
    full, cut, skipped = [], [], []
    for name, entry in report_plan.items():
        item = items.get(name)
        cut_work = item is not None and 0 < item.planned < item.full
        rows = f" on {item.rows}/{item.batch_rows} samples" if item is not None and item.rows else ""
        if entry.get("status") == "skipped" and not cut_work:
            skipped.append(name)
        elif cut_work and item is not None:
            done = (entry.get("done") or {}).get(item.unit) or item.planned  # what it did, else the plan
            cut.append(f"{name} ({done}/{item.full} {item.unit}{rows})")
        elif rows:
            cut.append(f"{name} ({rows.strip()})")
        else:
            full.append(name)
    parts = [f"budget {budget:g} s"]
    if full:
        parts.append("full " + ", ".join(full))
    if cut:
        parts.append("cut " + ", ".join(cut))
    if skipped:
        parts.append("skipped " + ", ".join(skipped))
    return parts[0] + ": " + "; ".join(parts[1:])


# --------------------------------------------------------------------------- calibration

CALIBRATION_STEPS = 3  # timed steps after a warm-up, when they are cheap
CALIBRATION_SHARE = 0.05  # ... but no more than 5% of the budget beyond the first two
MIN_TIMED = 2  # the first step pays for allocations and lazy init: time a second one when it costs
#                under CALIBRATION_MAX_SHARE of the budget (the calibration is start-up, not budget)
CALIBRATION_MAX_SHARE = 0.25


def calibrate(session: Any, budget: float) -> Calibration:
    """Time real training steps and forward passes on the user's first batch (the state is
    restored afterwards). The first step pays for allocations and lazy init: it is a
    warm-up when there is time for more, else its time is the estimate."""
    import torch

    from .session import seed_everything

    started = time.perf_counter()
    batch = session.first_batch
    step_times, fwd_times, opt_times = [], [], []
    with session.preserved():
        seed_everything(session.seed)
        for _ in range(1 + CALIBRATION_STEPS):
            t = time.perf_counter()
            opt_times.append(_train_step(session, batch))
            step_times.append(time.perf_counter() - t)
            spent = time.perf_counter() - started
            if len(step_times) >= MIN_TIMED and spent > CALIBRATION_SHARE * budget \
                    or step_times[0] > CALIBRATION_MAX_SHARE * budget:
                break
        with torch.no_grad():
            session.model.eval()
            for _ in range(2):
                t = time.perf_counter()
                session.forward(batch)
                fwd_times.append(time.perf_counter() - t)
                if time.perf_counter() - started > CALIBRATION_SHARE * budget:
                    break
    steps = step_times[1:] or step_times
    step_s = sorted(steps)[len(steps) // 2]
    opts = opt_times[1:] or opt_times
    forward_s = min(fwd_times) if fwd_times else step_s / 3
    return Calibration(step_s=step_s, forward_s=forward_s,
                       batches_per_epoch=_length(session.setup.train_loader),
                       val_batches=_length(session.setup.val_loader),
                       seconds=time.perf_counter() - started, rows=batch.batch_size,
                       optimizer_s=sorted(opts)[len(opts) // 2])


def _train_step(session: Any, batch: Any) -> float:
    """`session.train_step(batch)`, returning the seconds optimizer.step took (a share that
    does not shrink with the batch's rows)."""
    session.model.train()
    session.optimizer.zero_grad(set_to_none=True)
    session.loss(batch).backward()
    t = time.perf_counter()
    session.optimizer.step()
    return time.perf_counter() - t


def time_rows(session: Any, rows: int, budget: float = 0.0) -> float:
    """Seconds of one training step on the shared run's sub-batch of `rows` samples (the
    state is restored afterwards): the planner's estimate scales the calibration's step by
    the rows, this measures it once a sub-batch is planned. The first step on the new shape
    pays for allocations (measured on the bench's 1.1M CNN: a run planned from it took 0.7x
    its estimate): a second is timed when the first cost under CALIBRATION_SHARE of the budget."""
    from .session import seed_everything

    batch = session.sub_batch(rows)
    with session.preserved():
        seed_everything(session.seed)
        times = []
        for _ in range(2):
            t = time.perf_counter()
            _train_step(session, batch)
            times.append(time.perf_counter() - t)
            if times[0] >= CALIBRATION_SHARE * budget:
                break
        return times[-1]


def _length(loader: Any) -> Optional[int]:
    if loader is None or callable(loader) and not hasattr(loader, "__len__"):
        return None
    try:
        return int(len(loader))
    except TypeError:
        return None


def fmt_plan(items: dict) -> list:
    """For --debug: one line per planned check."""
    return [f"{n}: {i.planned}/{i.full} {i.unit}, ~{i.seconds:.1f} s" + (f" ({i.reason})" if i.reason else "")
            for n, i in items.items()]



# --------------------------------------------------------------------------- the run

class BudgetRun:
    """What the runner asks under --budget: calibrate once, then per check `before(name)`
    (a skip reason, or None and the settings and time limit to run with) and `after(result)`
    (the asymmetric rules, the plan's record). The budget's clock starts after the
    calibration (start-up: import, load the target, one calibration; issue 18)."""

    def __init__(self, session: Any, seconds: float, names: list, settings: dict):
        self.session, self.budget = session, float(seconds)
        self.names = list(names)
        self.settings = {k: dict(v) for k, v in (settings or {}).items()}  # the plan's overrides go here
        session.settings = self.settings  # the shared run reads overfit.steps / max_steps from it
        self.calibration: Optional[Calibration] = None
        self.error: Optional[str] = None
        try:
            self.calibration = calibrate(session, self.budget)
        except Exception as exc:  # the model's forward or loss raises: the checks will say it
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        self.deadline = time.monotonic() + self.budget
        self.items: dict = {}
        self.record: dict = {}
        self.shared_done = False
        self.shared_cut = False  # the shared run was stopped by the time limit
        self.extension_cap: Optional[int] = None  # the plan capped the shared run's extension here
        self.later_s = 0.0  # seconds planned for the checks after the one planned last

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def before(self, name: str) -> tuple:
        """(skip reason or None, time limit in seconds)."""
        left = self.left()
        remaining = self.names[self.names.index(name):] if name in self.names else [name]
        if name in ("grads", "overfit") and self.shared_cut:
            self.items[name] = Item(name, "steps", 0, 0, 0.0, 0.0, reason=INCONCLUSIVE)
            return f"{INCONCLUSIVE} (the shared training run was stopped at the time limit)", None
        if self.calibration is None:
            return (needs(0.0, left) if left <= 0 else None), max(left, 0.01)
        if name in SHARED_RUN_CHECKS and self.shared_done and name in self.items:
            item = self.items[name]
        else:
            planned = plan(left, self.calibration, remaining, self.settings, self.shared_done)
            item = planned.get(name)
            if item is not None and item.rows is not None and self.calibration.sub_rows != item.rows:
                # a sub-batch: its step was estimated from the whole batch's; measure it once
                # (on the budget's clock) and plan again with the measured step
                try:
                    self.calibration.sub_step_s = time_rows(self.session, item.rows, self.budget)
                    self.calibration.sub_rows = item.rows
                except Exception:  # the model raises on it: the check itself will say so
                    pass
                left = self.left()
                planned = plan(left, self.calibration, remaining, self.settings, self.shared_done)
                item = planned.get(name)
            if item is None:
                return None, max(left, 0.01)
            # what the checks after it were planned (the time a cut shared run leaves them)
            self.later_s = sum(i.seconds for n, i in planned.items()
                               if n != name and n not in SHARED_RUN_CHECKS and i.planned)
            self.items[name] = item
            for section, values in item.overrides.items():
                self.settings.setdefault(section, {}).update(values)
            if name in SHARED_RUN_CHECKS and "max_steps" in item.overrides.get("overfit", {}):
                self.extension_cap = item.overrides["overfit"]["max_steps"]  # below the unbudgeted cap
            if name in SHARED_RUN_CHECKS and item.seconds > 0:
                # the checks after it read this run: their plan entries say how far it went
                for other in SHARED_RUN_CHECKS:
                    if other != name and other in remaining:
                        self.items[other] = Item(other, item.unit, item.full, item.planned, 0.0, 0.0,
                                                 rows=item.rows, batch_rows=item.batch_rows)
        if item.reason:
            return item.reason, None
        if left <= 0:
            return needs(item.minimum_s, left), None
        # it may run past its estimate (estimates are rough, the machine's load changes) into
        # all the time the later checks' minimums do not need, never past the budget
        later = plan(left, self.calibration, remaining, self.settings, True)
        spare = left - sum(i.minimum_s for n, i in later.items() if n != name and i.planned)
        limit = max(min(left, max(OVERRUN * item.seconds + 1.0, spare)), 0.01)
        own_nan_run = name == "nan" and (self.settings.get("nan") or {}).get("steps") is not None
        if name in SHARED_RUN_CHECKS and item.seconds > 0 and item.cut and not own_nan_run:
            # a cut shared run: it may take up to its full steps, and stops (with the steps it
            # took, judged by the rules) before the time limit, leaving the scan after training
            # its time; estimates are rough both ways (ResNet-50's run took 0.6x its estimate)
            self.settings.setdefault("overfit", {})["steps"] = item.full
            # the scan after training (inside the run) costs what dead's own scan does: ResNet-50's
            # run at 300 s went 14 s past a 4-forward margin, and dead then missed its 21 s by 3 s
            margin = DEAD_FORWARDS * self.calibration.forward_s + 1.0
            # and within the time the checks after it were planned to leave them
            self.session.run_deadline = time.monotonic() + max(min(limit, left - self.later_s) - margin, 0.0)
            # but not before the minimum evidence (nan's, grads'): past it, the time decides
            self.session.run_min_steps = min(item.planned, MIN_RUN_STEPS)
        return None, limit

    def after(self, result: Any, timed_out: bool) -> None:
        """Apply the asymmetric rules to `result` (in place) and record the plan entry."""
        from ..report.findings import status_from_findings

        name = result.name
        item = self.items.get(name)
        self.session.run_deadline, self.session.run_min_steps = None, 0
        if name in SHARED_RUN_CHECKS and result.status != "skipped":
            self.shared_done = True
        if timed_out:
            # stopped at its time limit: never an error; what it saw before is not a verdict
            if name in SHARED_RUN_CHECKS:
                self.shared_cut = True
            result.status, result.reason, result.findings = "skipped", INCONCLUSIVE, []
            result.sections = {}
        elif result.status in ("pass", "warning", "fail") and item is not None:
            done = done_of(name, result.metrics, result.sections)
            # a pass resting on what was seen: overfit's loss crossed its target; the range test,
            # even with fewer points, placed the user's LR against a suggested one
            evidence = (name == "overfit" and _crossed(result.metrics)) or (
                name == "lr-find" and (result.sections.get("lr_find") or {}).get("suggested_lr") is not None)
            status, reason, dropped = judge(name, result.status, [f.code for f in result.findings], item,
                                            done, passed_by_evidence=evidence)
            if name == "overfit" and status == "pass" and result.metrics.get("memorising_slowly") \
                    and self.extension_cap is not None:
                # "still falling at the end": unbudgeted, the run would have gone on (and might
                # have plateaued); with its extension cut that pass rests on no evidence
                status, reason = "skipped", f"{INCONCLUSIVE} (still falling after {done} steps; " \
                    f"the run's extension was cut to {self.extension_cap} steps)"
            if dropped:
                result.findings = [f for f in result.findings if f.code not in dropped]
                result.metrics["budget_inconclusive"] = dropped
            result.status = status if status == "skipped" else status_from_findings(result.findings)
            if reason:
                result.reason = reason
            elif item.cut and done is not None and done < item.full and not result.reason:
                result.reason = f"cut by the budget to {done} of {item.full} {item.unit}"
            if item.rows is not None and item.batch_rows and result.status != "skipped":
                on = f"on {item.rows} of {item.batch_rows} samples of the first batch (the budget's sub-batch)"
                result.reason = f"{result.reason}; {on}" if result.reason else on
        ran = result.status != "skipped" or timed_out or bool(result.metrics)  # skipped after running: judged
        done = done_of(name, result.metrics, result.sections) if ran else 0
        entry: dict = {"status": result.status, "seconds": round(result.seconds, 2)}
        if item is not None:
            entry.update(item.to_dict())
            entry["done"] = {item.unit: done if done is not None else 0}
        if timed_out:
            entry["timed_out"] = True
        self.record[name] = entry

    def sections(self) -> dict:
        calib = self.calibration
        line = summary_line(self.budget, self.items, self.record)
        if self.error:
            line += f" (calibration failed: {self.error}; ran unplanned within the time)"
        return {"plan": self.record,
                "budget": {"seconds": self.budget, "line": line,
                           # the budget's clock: from after the calibration to the end of the last check
                           "used_seconds": round(self.budget - self.left(), 2),
                           "calibration": None if calib is None else {
                               "step_seconds": round(calib.step_s, 4), "forward_seconds": round(calib.forward_s, 4),
                               "optimizer_seconds": round(calib.optimizer_s, 4), "rows": calib.rows,
                               "seconds": round(calib.seconds, 2),
                               **({} if calib.sub_step_s is None else {
                                   "sub_batch": {"rows": calib.sub_rows, "step_seconds": round(calib.sub_step_s, 4)}})}}}


def _crossed(metrics: dict) -> bool:
    best, target = metrics.get("best_final_loss"), metrics.get("target_loss")
    return isinstance(best, (int, float)) and isinstance(target, (int, float)) and best <= target
