"""overfit: train on one fixed batch; a working model memorises it (SPEC §2, §3).

Reads the shared one-batch run (`instrument.shared_run`: the user's optimizer,
`--steps` steps on `session.first_batch`, the run `grads` and `nan` read too).
The run goes on past `steps` while the loss is still clearly falling, up to
`max_steps` (500): the test is about capacity and wiring, not
about speed at the user's LR. The verdict:

- memorised: the best of the last losses is at or below `--threshold` (for
  regression, relative to the first loss): pass;
- `loss-not-decreasing`: the loss barely moved;
- still falling when the run ended (`instrument.still_falling`): the model
  memorises slowly at this LR: pass, and the metrics say what was seen;
- otherwise the loss plateaued above the threshold: `cannot-overfit`.

A run stopped by a NaN/Inf (the `nan` check's finding) is judged on the steps
it took.
"""

from __future__ import annotations

from ..engine.session import Session, Skip
from ..probes.train_run import (
    DEFAULT_STEPS,
    DEFAULT_THRESHOLD,
    EXTEND_CAP,
    EXTEND_WINDOW,
    MIN_WINDOW_DROP,
    TrainRun,
    is_regression,
    shared_run,
    still_falling,
    target_loss,
)
from ..report.findings import make_finding
from ..report.numbers import plural
from . import Outcome

NAME = "overfit"
DEFAULTS = {
    "steps": DEFAULT_STEPS,  # SPEC §2: 100 steps on one batch
    "threshold": DEFAULT_THRESHOLD,  # SPEC §7: "loss > 0.1 after 100 steps" cannot overfit one batch
    # the run goes on past `steps` while the loss still clearly falls, up to this many
    # (instrument.EXTEND_CAP, where its value comes from); = steps: exactly `steps`
    "max_steps": EXTEND_CAP,
}
# "No real drop": the loss ends less than 10% below where it started. Measured: every
# healthy sample loses > 99% of its first loss in 100 steps; a 15-layer sigmoid MLP, a
# detached encoder or an optimizer over the head only still lose 12-15% (cannot-overfit).
MIN_RELATIVE_DROP = 0.1
# The verdict reads the best of the last few losses: one noisy step (dropout, a large
# Adam step) at the very end should not decide it.
FINAL_WINDOW = 5
# Fewer steps than this before a NaN stopped the run: too few to judge the loss curve.
MIN_VERDICT_STEPS = 10


def run(session: Session, settings: dict) -> Outcome:
    threshold = float(settings["threshold"])
    run_ = shared_run(session, int(settings["steps"]))
    losses = run_.losses
    outcome = Outcome(metrics={"steps": run_.steps, "steps_done": run_.steps_done,
                               "max_steps": run_.max_steps, "extended": run_.extended,
                               "losses": [round(v, 6) for v in losses],
                               "first_loss": losses[0] if losses else None,
                               "final_loss": losses[-1] if losses else None,
                               "stopped_by_nonfinite": run_.nonfinite is not None})
    if run_.rows is not None:  # --budget's sub-batch (budget.py): the run saw these samples only
        outcome.metrics.update(rows=run_.rows, batch_rows=run_.batch_rows)
    if run_.nonfinite is not None and len(losses) < MIN_VERDICT_STEPS:
        done = f"after {plural(run_.steps_done, 'update')}" \
            if run_.steps_done else "before any update"
        raise Skip(f"the training run hit NaN/Inf at step {run_.nonfinite.step + 1}, {done}: too few "
                   "to judge (the nan check says where it came from)")
    if len(losses) < 2:
        return outcome
    outcome.findings += verdict(session, run_, threshold, outcome.metrics)
    return outcome


def verdict(session: Session, run_: TrainRun, threshold: float, metrics: dict) -> list:
    losses = run_.losses
    first, best_final = losses[0], min(losses[-FINAL_WINDOW:])
    relative = is_regression(session)
    target = target_loss(session, first, threshold)
    drop = (first - best_final) / abs(first) if first else 0.0
    metrics.update(best_final_loss=best_final, target_loss=target, relative_drop=round(drop, 4),
                   relative_threshold=relative)
    if best_final <= target:
        return []
    steps = len(losses)
    stopped = " before a NaN/Inf stopped it" if run_.nonfinite is not None else ""
    evidence = {"first_loss": first, "final_loss": losses[-1], "best_final_loss": best_final,
                "threshold": threshold, "target_loss": target, "relative_drop": drop, "steps": steps}
    if drop < MIN_RELATIVE_DROP:
        return [make_finding(
            "loss-not-decreasing", NAME, None,
            f"Trained alone on {_on(run_)} for {steps} steps{stopped}, the loss went from {first:.4g} to "
            f"{best_final:.4g} ({_change(drop)}): no real drop (less than "
            f"{MIN_RELATIVE_DROP:.0%} below the first loss).", evidence)]
    what = f"{threshold:g} x the first loss = {target:.4g}" if relative else f"{threshold:g}"
    if run_.nonfinite is None and still_falling(losses):
        # Not a capacity or wiring bug: it is learning the batch, only slowly at this LR.
        metrics["memorising_slowly"] = (
            f"after {steps} steps the loss is {best_final:.4g} ({_change(drop)} than the first "
            f"{first:.4g}), above the threshold {what} but still falling by >= "
            f"{MIN_WINDOW_DROP:.0%} per {EXTEND_WINDOW} steps: memorising slowly at this LR, not an error")
        return []
    return [make_finding(
        "cannot-overfit", NAME, None,
        f"Trained alone on {_on(run_)} for {steps} steps{stopped}, the loss went from {first:.4g} only "
        f"to {best_final:.4g} ({_change(drop)}), above the threshold {what}, and stopped falling "
        f"(less than {MIN_WINDOW_DROP:.0%} lower over its last {EXTEND_WINDOW} steps).", evidence)]


def _on(run_: TrainRun) -> str:
    """What the run trained on: one batch, or --budget's sub-batch of it."""
    return "one batch" if run_.rows is None else f"{run_.rows} of one batch's {run_.batch_rows} samples"


def _change(drop: float) -> str:
    return f"{drop:.0%} lower" if drop >= 0 else f"{-drop:.0%} higher"
