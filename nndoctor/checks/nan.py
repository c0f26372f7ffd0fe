"""nan: the first NaN/Inf of a short training run, and the module and op that made it (SPEC §3).

Many NaNs appear only after some steps (a diverging LR), so this reads the
shared one-batch training run (`instrument.shared_run`, the run `overfit` and
`grads` read), which stops at the first non-finite loss or gradient and re-runs
that one step under exact localisation: the first module whose forward output
went non-finite and the op inside it (`torch.log`, `sqrt`, division), or, for a
NaN born in the backward pass, the first autograd node whose gradient went
non-finite.
"""

from __future__ import annotations

import math
from typing import Optional

from ..engine.session import Session
from ..probes.train_run import NonFinite, TrainRun, shared_run
from ..report.codes import CODES
from ..report.findings import make_finding
from . import Outcome

NAME = "nan"
DEFAULTS = {
    "steps": None,  # training steps to watch; None: the shared run's length (overfit.steps, 100)
}
LISTED_PARAMS = 5  # parameter names quoted in a message; the evidence holds them all


def run(session: Session, settings: dict) -> Outcome:
    steps = settings.get("steps")
    run_ = shared_run(session, None if steps is None else int(steps))  # None: the shared run
    outcome = Outcome(metrics={"steps": run_.steps, "steps_done": run_.steps_done,
                               "first_nonfinite_step": None})
    event = run_.nonfinite
    if event is None:
        return outcome
    outcome.metrics["first_nonfinite_step"] = event.step
    outcome.findings.append(make_finding(
        "non-finite", NAME, event.where, describe(event, run_),
        {"step": event.step, "steps": run_.steps, "kind": event.kind, "op": event.op,
         "value": event.value, "loss": event.loss, "scope": event.scope,
         "parameters": event.params, "reproduced": event.reproduced,
         "last_finite_losses": run_.losses[-5:]},
        source=event.source, fix=nonfinite_fix(event)))
    return outcome


# A NaN the model did not make needs another fix than the code's (a lower LR, eps in the model).
LOSS_FIX = ("Guard the loss: skip or zero a batch with no valid target (every label ignored), and put "
            "eps in its logs and denominators (log(x + eps), a count clamped to >= 1).")


# A rank whose own step was finite got NaN/Inf gradients from DDP's all-reduce (watch, live).
ALL_REDUCE_FIX = ("Read the other ranks' reports: the one whose loss or inputs went non-finite at this "
                  "step names where; that rank's fix is this run's.")


def nonfinite_fix(event) -> Optional[str]:
    """The fix for where the NaN came from: the data's for corrupt inputs, the loss's for a
    loss that made a NaN of a finite output; None (the code's own) otherwise."""
    if event.kind == "input":
        return CODES["data-non-finite"].fix
    if event.kind == "all-reduce":
        return ALL_REDUCE_FIX
    if loss_made_nan(event):
        return LOSS_FIX
    return None


def loss_made_nan(event) -> bool:
    """The loss function turned finite values into NaN: its own arithmetic (0/0, log of a
    negative), not an overflow, whose inf comes from too large an output (the LR's doing)."""
    value = event.value if event.value is not None else \
        "nan" if event.loss is not None and math.isnan(event.loss) else None
    return event.scope == "loss" and event.kind in ("loss", "forward") and value == "nan"


def describe(event: NonFinite, run_: TrainRun) -> str:
    """One sentence: when, what, where, which op (SPEC §3 messages)."""
    when = f"At step {event.step + 1} of {run_.steps}"
    params = _params(event.params)
    told = describe_located(event, when, params)
    if told is not None:
        return told
    if event.kind == "loss":
        return f"{when} the loss is {_num(event.loss)}{params}."
    return (f"{when} the loss or a gradient went non-finite ({_num(event.loss)}), but a re-run of "
            "that step was finite: a nondeterministic op is involved.")


def describe_located(event, when: str, params: str = "") -> Optional[str]:
    """The sentence for an event placed in a weight, the inputs, the forward or the backward
    (`check`'s shared run and `watch`'s re-run both record these); None for the other kinds."""
    place = _place(event)
    line = f" ({event.source[0]}:{event.source[1]})" if event.source else ""
    value = event.value or "NaN/Inf"
    if event.kind == "parameter":
        return (f"{when} the weight `{event.where}` is already {value}: the previous update "
                "overflowed it (the LR or the gradients are far too large).")
    if event.kind == "input":
        return f"{when} the batch's inputs hold {value} values, so the loss is {_num(event.loss)}."
    if event.kind == "forward" and event.op:
        return (f"{when} the forward pass went {value}: `{event.op}` in {place}{line} turned finite "
                f"inputs into {value}; the loss is {_num(event.loss)}.")
    if event.kind == "forward":
        return f"{when} the forward output of {place} is {value}; the loss is {_num(event.loss)}."
    if event.kind == "backward":
        op = f"the backward of `{event.op}` in {place}{line}" if event.op else place
        return (f"{when} the forward pass and the loss ({_num(event.loss)}) are finite, but {op} made "
                f"the gradient {value}{params}.")
    return None


def _place(event: NonFinite) -> str:
    if event.scope == "loss":
        return "the loss"
    return f"`{event.where}`" if event.where else "the model's own forward"


def _params(names: list) -> str:
    if not names:
        return ""
    shown = ", ".join(f"`{n}`" for n in names[:LISTED_PARAMS])
    more = f" and {len(names) - LISTED_PARAMS} more" if len(names) > LISTED_PARAMS else ""
    return f"; non-finite gradients reach {shown}{more}"


def _num(x) -> str:
    return "unknown" if x is None else f"{x:.4g}"
