"""The one instrumented training run that `overfit`, `grads` and `nan` read.

`shared_run(session)` trains the model on one fixed batch (`session.first_batch`)
with the user's optimizer for `overfit.steps` steps, once per `nndoctor check`
whichever of the three checks asks first (`session.shared`, keyed by the length).
Under --budget, when the whole batch does not fit, it trains on `overfit.rows` of the
batch's samples (`Session.sub_batch`; `TrainRun.rows` says how many).
The run then goes on, EXTEND_WINDOW steps at a time up to `overfit.max_steps`
(EXTEND_CAP), while the loss is still above overfit's target and still
clearly falling (`still_falling`): a healthy model that memorises slowly at
the user's LR gets the steps it needs, a plateau stops at once. It records
per step:

- the loss;
- per trainable parameter, the gradient's norm (one fused `_foreach_norm`),
  stacked with the loss into ONE tensor read with ONE host sync per step (no
  `.item()` per parameter);
- every `DETAIL_EVERY` steps (and the first and last), also each gradient's
  mean, std and max-abs, and the update/weight ratio ‖Δw‖/‖w‖ of the step
  (CS231n: ~1e-3 is healthy), read with the same sync or the next step's;
- which parameters got a gradient at all (None or exactly zero: no-gradient);
- the first non-finite loss or gradient, where the run stops (no update is
  applied with a NaN gradient).

Normal steps carry no hooks (only the first forward records the modules'
execution order), so the run costs little more than a bare training loop. The
non-finite step alone is re-run under `_Tracer` (a `tracer.Tracer`): module hooks, a
function mode that names the op (torch.log, sqrt, division...) that made
a non-finite value from finite inputs, and autograd-node hooks that find the
first backward node whose output gradient went non-finite. That is one step of
slow, exact localisation instead of `detect_anomaly`'s ~2.5x on every step.

The probe itself is `record_run(RunInputs(model, optimizer, batch, loss, ...), steps,
max_steps, target)`: it works on any training loop's objects. `shared_run` and
`train_run` are the Session adapters `check` uses (`inputs_of`).

NB: a run is not reentrant, and it leaves the model trained (its train/eval flags are
put back): `session.shared` restores the weights, optimizer state and RNGs afterwards.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
from torch.utils._pytree import tree_leaves

from ..engine.session import LABEL_KEYS, SECOND_COPY_MAX_MB, Batch, Session, primary_output, tensors_mb
from ..errors import is_user_file, short_path
from . import tracer as tracer_module
from .tracer import Tracer, modes_kept

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
DEFAULT_STEPS = 100  # SPEC §2: `overfit --steps 100`; the shared run's length
# The loss a memorised batch reaches (`overfit --threshold`), relative to the first loss for
# regression (REGRESSION_LOSSES): the run extends towards it, the overfit check judges by it.
DEFAULT_THRESHOLD = 0.1  # SPEC §7: "loss > 0.1 after 100 steps" cannot overfit one batch
# Regression losses have no absolute scale: their threshold is relative to the first loss.
REGRESSION_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)
# Steps that also record the gradients' mean/std/max-abs and the update/weight ratio. Those
# cost 3 small reductions per parameter (and ‖Δw‖ a copy of the weights), which on a
# tiny model rivals the step itself: measured on xor, every step costs 1.33x a bare loop,
# every 10th 1.24x (2 cores, loaded); the norm alone, every step, is what the checks need.
DETAIL_EVERY = 10
# Extending the default run (see the module docstring), EXTEND_WINDOW steps at a time while
# the loss is still falling: the median of the last SMOOTH_STEPS losses is >= 10% below the
# median of the SMOOTH_STEPS losses one window earlier (medians: one Adam spike does not
# decide it). Measured on one batch (plain loops, seed 0; drop over the 50 steps before steps
# 100, 150, ..., 500): healthy models that memorise slowly: a Keras-init MLP at Adam 3e-4
# 0.16 at step 100 (a slow start), then 0.30-0.40; a GRU LM 0.89 down to 0.18. A 1-unit
# bottleneck: 0.12, 0.07, 0.03, 0.02, then 0.00: a plateau stops the run within one window.
# 10% per window is 0.9^8 = 0.43 over the 400 extra steps: slower than that is no progress.
# Unless the fall is speeding up (a small init sits on a plateau first, then escapes): the run
# also goes on while the last window's drop is >= 2% and larger than the window's before.
# Measured: the Keras-init MLP at Adam 2e-4 drops 3%, then 7% by step 100 (and memorises by
# ~550); a 1-unit bottleneck decelerates (12%, 7%, 3%), one at Adam 3e-4 creeps at 1% a window.
EXTEND_WINDOW = 50
SMOOTH_STEPS = 10
MIN_WINDOW_DROP = 0.10
MIN_ACCELERATING_DROP = 0.02
# The extended run's cap (`overfit.max_steps`): 5x the SPEC's 100 steps. The slowest healthy
# zoo models of issue 13 memorise their batch by step 500 (the GRU LM 0.050, nn.Transformer 0.069; BERT 0.041 and
# GPT-2 0.011 by 200, Whisper 0.064 by 300); one still falling at the cap is "memorising
# slowly" (overfit: not an error), not extended further.
EXTEND_CAP = 5 * DEFAULT_STEPS
# The update/weight ratio needs the weights from before the step: a second copy of them on
# top of the session's snapshot, so it is not measured above this size.
UPDATE_RATIO_MAX_MB = SECOND_COPY_MAX_MB


# --------------------------------------------------------------------------- records

@dataclass
class NonFinite:
    """The first NaN/Inf of the run and where it came from."""

    step: int  # 0-based step at which it appeared
    kind: str  # "forward" (an activation), "backward" (a gradient), "loss", "input", "parameter"
    where: Optional[str]  # module path (or parameter name); None: the root model's forward, or the loss
    scope: str = "model"  # "model": inside the model's forward (or backward); "loss": in the criterion
    op: Optional[str] = None  # the op that produced it, e.g. "log", "sqrt", "/"
    value: Optional[str] = None  # "nan", "inf" or "-inf"
    source: Optional[tuple] = None  # (file, line) of the user's call of that op
    loss: Optional[float] = None  # the loss at that step (may itself be nan/inf)
    params: list = field(default_factory=list)  # parameters whose gradient is non-finite
    reproduced: bool = True  # False: the re-run of the step was finite (nondeterminism)


@dataclass
class TrainRun:
    """What the shared run recorded. Per-step lists are indexed [step][param]."""

    steps: int  # planned (the run's length before any extension)
    names: list  # trainable parameters, as in model.named_parameters()
    modules: list  # the module path owning each parameter ("" for the root)
    numels: list
    shapes: list
    losses: list = field(default_factory=list)  # finite losses, one per step taken or attempted
    grad_norm: list = field(default_factory=list)  # every step
    total_norm: list = field(default_factory=list)  # ‖all gradients‖, every step
    grad_mean: dict = field(default_factory=dict)  # detail step -> [per param]
    grad_std: dict = field(default_factory=dict)
    grad_max: dict = field(default_factory=dict)
    update_ratio: dict = field(default_factory=dict)  # detail step -> [‖Δw‖/‖w‖ per param]
    weight_norm: dict = field(default_factory=dict)  # step -> [‖w‖ per param], before the step
    update_norm: dict = field(default_factory=dict)  # step -> [‖Δw‖ per param]
    ever_grad: list = field(default_factory=list)  # per param: a non-None gradient at some step
    ever_nonzero: list = field(default_factory=list)  # per param: a gradient ≠ 0 at some step
    not_in_optimizer: list = field(default_factory=list)  # trainable names in no param group
    # Parameter indices in the order step 0's backward accumulated their gradients, reversed:
    # from the input side to the loss (the distance the gradient travels, which is what
    # vanishes or explodes; unlike forward order it also places functionally used weights).
    depth_order: list = field(default_factory=list)
    nonfinite: Optional[NonFinite] = None
    update_ratio_skipped: Optional[str] = None  # why the update/weight ratio was not measured
    steps_done: int = 0  # optimizer steps applied (never the non-finite step)
    stopped_by_time: bool = False  # the run stopped before its steps at `RunInputs.stop_at` (--budget)
    init_weight_norm: float = 0.0  # ‖all trainable parameters‖ before the first update
    # ‖∂loss/∂model output‖ at step 0 (the loss's own gradient scale); None: no output tensor
    # (a loss_fn) or it has no gradient
    init_output_grad_norm: Optional[float] = None
    max_steps: int = 0  # the cap of the extension (== steps: no extension)
    # A sub-batch (`overfit.rows`, set by --budget): trained on `rows` of the first batch's
    # `batch_rows` samples. None: the whole first batch.
    rows: Optional[int] = None
    batch_rows: Optional[int] = None
    extended: Optional[str] = None  # why the run went past `steps`, if it did
    forward_passes: int = 0  # model forward passes, the localisation re-run included
    seconds: float = 0.0
    # The activation scan (`scan.ScanResult`) of the weights the run ended with, before
    # `session.shared` restores the initial ones: the dead check reads which units died
    # during training. None when the run went non-finite.
    activations_after: Any = None

    def layers(self) -> dict:
        """module path -> indices of its own trainable parameters, from the input side to
        the loss; modules that got no gradient at step 0 come last."""
        groups: dict = {}
        for i, module in enumerate(self.modules):
            groups.setdefault(module, []).append(i)
        rank = {i: k for k, i in enumerate(self.depth_order)}
        last = len(rank)
        return dict(sorted(groups.items(), key=lambda kv: min(rank.get(i, last + i) for i in kv[1])))

    def layer_norm(self, step: int, indices: list) -> float:
        """‖gradient‖ of a group of parameters at `step`."""
        return math.sqrt(sum(self.grad_norm[step][i] ** 2 for i in indices))


# --------------------------------------------------------------------------- entry points

def run_length(session: Session) -> int:
    """The shared run's length: `overfit.steps`, whichever check asks."""
    steps = (session.settings.get("overfit") or {}).get("steps")
    return DEFAULT_STEPS if steps is None else int(steps)


def run_rows(session: Session) -> Optional[int]:
    """The shared run's sub-batch: `overfit.rows` of the first batch's samples (None: all)."""
    rows = (session.settings.get("overfit") or {}).get("rows")
    return None if rows is None else int(rows)


def _run_key(steps: int, rows: Optional[int]) -> str:
    return f"train_run:{steps}" if rows is None else f"train_run:{steps}:rows={rows}"


def max_steps_of(session: Session, steps: int) -> int:
    """How far the shared run may go past `steps`: `overfit.max_steps` (EXTEND_CAP unless set;
    set it to `steps` for a run of exactly `steps`)."""
    cap = (session.settings.get("overfit") or {}).get("max_steps")
    return max(EXTEND_CAP if cap is None else int(cap), steps)


def shared_run(session: Session, steps: Optional[int] = None) -> TrainRun:
    """The instrumented run, done once per session and length (the Session adapter of
    `record_run`). `steps` None: the shared run, whose plan (length, cap, target) is read from
    the user's `overfit` settings here and only here; any other length is run exactly."""
    length = run_length(session)
    steps = length if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    max_steps, target, rows = steps, None, None
    if steps == length:  # the shared run; a check's own length (nan --steps N) is run exactly
        max_steps, target = max_steps_of(session, steps), lambda first: target_loss(session, first)
        rows = run_rows(session)  # and only the shared run trains on a sub-batch
    return session.shared(_run_key(steps, rows), lambda: train_run(session, steps, max_steps, target, rows))


def finished_run(session: Session) -> Optional[TrainRun]:
    """The shared run if a check has done it already, else None: for readers that should not
    pay for a training run of their own (the dead check's scan after training)."""
    return session._shared.get(_run_key(run_length(session), run_rows(session)))


def target_loss(session: Session, first: float, threshold: Optional[float] = None) -> float:
    """The loss a memorised batch reaches: `threshold`, times the first loss for regression."""
    if threshold is None:
        threshold = float((session.settings.get("overfit") or {}).get("threshold", DEFAULT_THRESHOLD))
    return threshold * abs(first) if is_regression(session) else threshold


def is_regression(session: Session) -> bool:
    """A regression loss (no absolute scale): the criterion's type or, when the loss comes
    from the model itself (a Hugging Face `.loss`) or a loss_fn, the targets: floats with
    non-integer values (class labels, token ids and 0/1 multi-label targets are integers)."""
    if not session.uses_model_loss:
        return isinstance(session.criterion, REGRESSION_LOSSES)
    batch = session.first_batch
    target = batch.target
    if target is None:
        target = next((batch.kwargs[k] for k in LABEL_KEYS if k in batch.kwargs), None)
    if not isinstance(target, torch.Tensor) or not target.is_floating_point() or not target.numel():
        return False
    return bool((target != target.round()).any())


def still_falling(losses: list) -> bool:
    """The loss fell by MIN_WINDOW_DROP over the last EXTEND_WINDOW steps: the median of the
    last SMOOTH_STEPS losses against the median of those one window earlier. False when
    there are too few steps to tell."""
    if len(losses) < EXTEND_WINDOW + SMOOTH_STEPS:
        return False
    return window_drop(losses, len(losses)) >= MIN_WINDOW_DROP


def window_drop(losses: list, end: int) -> float:
    """How much lower the loss is at step `end` than EXTEND_WINDOW steps before (medians of
    SMOOTH_STEPS losses; the first window compares with the first SMOOTH_STEPS)."""
    start = max(end - EXTEND_WINDOW, SMOOTH_STEPS)
    before = statistics.median(losses[start - SMOOTH_STEPS:start])
    last = statistics.median(losses[end - SMOOTH_STEPS:end])
    return 1 - last / before if before > 0 else 0.0


def speeding_up(losses: list) -> bool:
    """The last window's drop is >= MIN_ACCELERATING_DROP and larger than the one before."""
    end = len(losses)
    if end < 2 * SMOOTH_STEPS + EXTEND_WINDOW // 2:
        return False
    last = window_drop(losses, end)
    return last >= MIN_ACCELERATING_DROP and last > window_drop(losses, end - EXTEND_WINDOW)


def _go_on(run: TrainRun, done: int, target) -> bool:
    """At the end of the planned steps or of an extension window: extend by one more window?"""
    if done >= run.max_steps or done < run.steps or (done - run.steps) % EXTEND_WINDOW:
        return False
    losses = run.losses
    if target is None or not losses or min(losses[-5:]) <= target(losses[0]):
        return False
    if not (still_falling(losses) or speeding_up(losses)):
        return False
    run.extended = (f"the loss was still above the target and falling by >= {MIN_WINDOW_DROP:.0%} "
                    f"per {EXTEND_WINDOW} steps, or ever faster (cap {run.max_steps})")
    return True


@contextlib.contextmanager
def _no_progress(description: str, total: Optional[int] = None) -> Iterator[Callable]:
    yield lambda n=1: None


@dataclass
class RunInputs:
    """What the recorded run reads, from any training loop: `check` builds it from its Session
    (`inputs_of`), the watch helper from the user's own objects."""

    model: nn.Module
    optimizer: Any  # torch.optim.Optimizer
    batch: Batch  # the one batch it trains on
    loss: Callable[[Batch], torch.Tensor]  # the scalar training loss of a batch (one forward)
    # (output, loss) of one forward pass: step 0 reads ‖∂loss/∂output‖ from it; None: `loss` only
    output_and_loss: Optional[Callable[[Batch], tuple]] = None
    device: Optional[torch.device] = None  # where the statistics are gathered (None: the model's)
    progress: Callable = _no_progress  # (description, total) -> a context yielding advance(n)
    after: Optional[Callable[[], Any]] = None  # read on the trained weights (the activation scan)
    # time.monotonic() past which no step starts (--budget's soft stop: the run ends with the
    # steps it took instead of being killed at the hard limit); None: run every step
    stop_at: Optional[float] = None
    stop_after: int = 0  # ... only once this many steps are done


def inputs_of(session: Session, rows: Optional[int] = None) -> RunInputs:
    """The run's inputs from a Session: its model, optimizer, first batch (or `rows` of its
    samples: `Session.sub_batch`) and loss wiring."""
    from .activations import session_scan  # forward-only passes over the first batches, no gradient

    return RunInputs(model=session.model, optimizer=session.optimizer, batch=session.sub_batch(rows),
                     loss=session.loss, output_and_loss=session.output_and_loss, device=session.device,
                     progress=session.progress, after=lambda: session_scan(session),
                     stop_at=session.run_deadline, stop_after=session.run_min_steps)


def train_run(session: Session, steps: int, max_steps: Optional[int] = None, target=None,
              rows: Optional[int] = None) -> TrainRun:
    """`record_run` of the session's model on its first batch, or `rows` of its samples
    (the Session adapter)."""
    inputs = inputs_of(session, rows)
    run = record_run(inputs, steps, max_steps, target)
    full, kept = session.first_batch.batch_size, inputs.batch.batch_size
    if rows is not None and full is not None and kept is not None and kept < full:
        run.rows, run.batch_rows = kept, full
    return run


def record_run(inputs: RunInputs, steps: int, max_steps: Optional[int] = None,
               target: Optional[Callable[[float], float]] = None) -> TrainRun:
    """Train on `inputs.batch` for `steps` steps, recording as described above; then
    on, EXTEND_WINDOW steps at a time up to `max_steps`, while the loss is above
    `target(first loss)` and `still_falling`.

    Leaves the model trained (the caller restores it: `shared_run` does); its train/eval
    flags are put back."""
    with modes_kept(inputs.model):
        return _record_run(inputs, steps, max_steps, target)


def _record_run(inputs: RunInputs, steps: int, max_steps: Optional[int], target) -> TrainRun:
    started = time.perf_counter()
    model, optimizer = inputs.model, inputs.optimizer
    batch = inputs.batch
    device = inputs.device or _model_device(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    params: list[torch.Tensor] = [p for _, p in named]
    run = TrainRun(steps=steps, names=names, modules=[n.rpartition(".")[0] for n in names],
                   numels=[p.numel() for p in params], shapes=[list(p.shape) for p in params],
                   ever_grad=[False] * len(params), ever_nonzero=[False] * len(params),
                   max_steps=max(max_steps or steps, steps))
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    run.not_in_optimizer = [n for n, p in named if id(p) not in in_optimizer]

    model.train()
    # torch.stack needs one device; a model split over devices gathers its statistics first.
    devices = {p.device for p in params}
    multi_device = len(devices) > 1 or (devices and next(iter(devices)) != device)
    pending = None  # (step, [‖Δw‖...], [‖w‖...]) device tensors, read with the next sync
    weights_mb = tensors_mb(params)
    if weights_mb > UPDATE_RATIO_MAX_MB:
        run.update_ratio_skipped = (f"not measured: the weights ({weights_mb:.0f} MB) are over "
                                    f"{UPDATE_RATIO_MAX_MB} MB, too large to copy once more")
    with inputs.progress("overfit", steps) as advance:
        step, end = 0, steps
        step_started = time.monotonic()
        while step < end:
            if inputs.stop_at is not None and step and step >= inputs.stop_after:
                now = time.monotonic()
                if now + (now - step_started) / step > inputs.stop_at:  # the next step would pass it
                    run.stopped_by_time = True
                    break
            rng = _rng_state(device)  # to re-run this very step if it goes non-finite
            optimizer.zero_grad(set_to_none=True)
            output_grad: list = []
            if step == 0:
                if inputs.output_and_loss is not None:
                    output, loss = inputs.output_and_loss(batch)
                    output = primary_output(output)
                else:
                    output, loss = None, inputs.loss(batch)
                if isinstance(output, torch.Tensor) and output.requires_grad:
                    output.register_hook(lambda g, seen=output_grad: seen.append(_dense(g).norm(dtype=torch.float32)))
                del output
            else:
                loss = inputs.loss(batch)
            run.forward_passes += 1
            if loss.requires_grad:
                order_hooks = _record_depth(params, run.depth_order) if step == 0 else []
                try:
                    loss.backward()
                finally:
                    for h in order_hooks:
                        h.remove()
            if step == 0:
                _store_scales(run, params, output_grad)
            grads = [p.grad for p in params]
            present = [i for i, g in enumerate(grads) if g is not None]
            dense = [_dense(g) for g in grads if g is not None]

            # One stacked tensor, one sync: the loss, each present gradient's norm, on detail
            # steps its sum, min and max (aminmax: _foreach_norm(ord=inf) is ~15x slower on
            # CPU), then the previous detail step's update norms.
            # Detail on every possible last step too: the planned one, each window's end.
            detail = step % DETAIL_EVERY == 0 or (step + 1 >= steps and (step + 1 - steps) % EXTEND_WINDOW == 0)
            parts = [_as_f32(loss.detach())]
            k = len(dense)
            if dense:
                parts += torch._foreach_norm(dense, 2, dtype=torch.float32)
                if detail:
                    parts += [g.sum(dtype=torch.float32) for g in dense]
                    extremes = [torch.aminmax(g) for g in dense]
                    parts += [_as_f32(e.min) for e in extremes] + [_as_f32(e.max) for e in extremes]
            if pending is not None:
                parts += pending[1] + pending[2]
            if multi_device:
                parts = [t.to(parts[0].device) for t in parts]
            values = torch.stack(parts).tolist()  # the step's one host sync
            # Drop these references now: held into the next step, they keep this step's
            # gradients alive beside the next backward's (a whole extra copy of the weights).
            del grads, dense, parts

            loss_value, norm = values[0], values[1:1 + k]
            rest = values[1 + k:]
            if detail:
                _store_detail(run, step, present, norm, rest[:k], rest[k:2 * k], rest[2 * k:3 * k])
                rest = rest[3 * k:]
            if pending is not None:
                _store_update(run, pending[0], rest, len(params))
                pending = None
            _store_norms(run, present, norm)
            # ‖g‖ is NaN/Inf iff an element is (short of a norm past 3e38: exploding anyway).
            finite = math.isfinite(loss_value) and all(math.isfinite(v) for v in norm)
            if math.isfinite(loss_value):
                run.losses.append(loss_value)
            if not finite:
                run.nonfinite = localise(inputs, device, rng, step, loss_value, named)
                run.forward_passes += 1
                break

            sample = detail and params and run.update_ratio_skipped is None
            with torch.no_grad():
                if sample:
                    before = torch._foreach_mul(params, 1.0)
                    weight_norms = list(torch._foreach_norm(before, 2, dtype=torch.float32))
                optimizer.step()
                if sample:
                    torch._foreach_sub_(before, params)  # in place: Δw without a third copy
                    pending = (step, list(torch._foreach_norm(before, 2, dtype=torch.float32)),
                               weight_norms)
                    del before
            run.steps_done += 1
            advance(1)
            step += 1
            if step == end and _go_on(run, step, target):
                end = min(end + EXTEND_WINDOW, run.max_steps)  # a cap between windows (--budget's) holds
    if pending is not None:
        _store_update(run, pending[0], torch.stack(pending[1] + pending[2]).tolist(), len(params))
    optimizer.zero_grad(set_to_none=True)
    if run.nonfinite is None and inputs.after is not None:
        run.activations_after = inputs.after()
    run.seconds = time.perf_counter() - started
    return run


def _store_scales(run: TrainRun, params: list, output_grad: list) -> None:
    """Step 0, before the update: ‖w‖ of all trainable parameters and ‖∂L/∂output‖ (one sync)."""
    parts = [torch.stack(list(torch._foreach_norm([p.detach() for p in params], 2, dtype=torch.float32))).norm()
             if params else torch.zeros(())]
    parts += [t.to(parts[0].device) for t in output_grad[:1]]
    values = torch.stack(parts).tolist()
    run.init_weight_norm = values[0]
    run.init_output_grad_norm = values[1] if len(values) > 1 else None


def _dense(grad: torch.Tensor) -> torch.Tensor:
    # Sparse gradients (Embedding(sparse=True)): the stored values have the same norm, sum, max.
    return grad.coalesce().values() if grad.is_sparse else grad


def _as_f32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float32 else t.float()


def _store_norms(run: TrainRun, present: list, norm: list) -> None:
    row = [0.0] * len(run.names)  # a None gradient counts as 0
    for j, i in enumerate(present):
        row[i] = norm[j]
        run.ever_grad[i] = True
        if norm[j] != 0.0:
            run.ever_nonzero[i] = True
    run.grad_norm.append(row)
    run.total_norm.append(math.sqrt(sum(v * v for v in norm)))


def _store_detail(run: TrainRun, step: int, present: list, norm: list, sums: list,
                  mins: list, maxs: list) -> None:
    count = len(run.names)
    mean_row, std_row, max_row = [0.0] * count, [0.0] * count, [0.0] * count
    for j, i in enumerate(present):
        numel = run.numels[i]
        mean = sums[j] / numel
        # std from ‖g‖² and Σg (unbiased, as torch.std): no extra device reduction.
        var = (norm[j] ** 2 - numel * mean ** 2) / (numel - 1) if numel > 1 else 0.0
        mean_row[i] = mean
        std_row[i] = math.sqrt(var) if var > 0 else (0.0 if var == var else var)
        max_row[i] = max(-mins[j], maxs[j]) if mins[j] == mins[j] and maxs[j] == maxs[j] else math.nan
    run.grad_mean[step], run.grad_std[step], run.grad_max[step] = mean_row, std_row, max_row


def _store_update(run: TrainRun, step: int, values: list, count: int) -> None:
    deltas, weights = values[:count], values[count:2 * count]
    run.weight_norm[step], run.update_norm[step] = weights, deltas
    run.update_ratio[step] = [d / w if w > 0 else (0.0 if d == 0 else math.inf)
                              for d, w in zip(deltas, weights)]


def _record_depth(params: list, order: list) -> list:
    """Hooks (first step only) that note the order gradients are accumulated, kept reversed."""
    def hook(i):
        return lambda p: order.insert(0, i)
    return [p.register_post_accumulate_grad_hook(hook(i)) for i, p in enumerate(params)]


def _model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------- localisation

def localise(inputs: RunInputs, device: torch.device, rng: dict, step: int, loss_value: float,
             named: list) -> NonFinite:
    """Re-run the failing step under the tracer and say where the first NaN/Inf came from."""
    model, batch = inputs.model, inputs.batch
    event = NonFinite(step=step, kind="loss", where=None, loss=loss_value)
    event.params = _nonfinite_grads(named)  # from the failing step itself
    broken = [n for n, p in named if not bool(torch.isfinite(p).all())]
    if broken:  # the previous update overflowed a weight: nothing in this step's graph is to blame
        event.kind, event.where, event.value = "parameter", broken[0], _kind_of(dict(named)[broken[0]])
        event.params = broken
        return event
    bad_input = _nonfinite_leaf((batch.args, batch.kwargs))
    if bad_input is not None:
        event.kind, event.value = "input", _kind_of(bad_input)
        return event

    _set_rng(rng, device)
    inputs.optimizer.zero_grad(set_to_none=True)
    tracer = _Tracer(model)
    try:
        with tracer:
            loss = inputs.loss(batch)
        loss_finite = bool(torch.isfinite(loss).all())
        if loss_finite and loss.requires_grad:
            tracer.hook_backward(loss)
            loss.backward()
            event.params = _nonfinite_grads(named)
    finally:
        tracer.remove()
    inputs.optimizer.zero_grad(set_to_none=True)

    found = tracer.first_op or tracer.first_backward
    if tracer.first_op is not None:
        event.kind = "forward"
    elif tracer.first_backward is not None:
        event.kind = "backward"
    elif tracer.first_module is not None:
        event.kind, found = "forward", {"module": tracer.first_module, "op": None, "source": None,
                                        "value": tracer.first_module_value}
    elif not loss_finite:
        event.kind = "loss"
    elif event.params:
        # A NaN gradient no traced node produced (an op hidden from the mode): the parameter
        # latest in forward order is the one backward reaches first.
        event.kind = "backward"
        rank = {m: k for k, m in enumerate(tracer.order)}
        first = max(event.params, key=lambda n: rank.get(n.rpartition(".")[0], -1))
        found = {"module": first, "op": None, "source": None, "value": None}
    else:
        event.reproduced = False
    if found:
        event.where = found["module"] or None
        event.scope = "loss" if found["module"] is None else "model"
        event.op, event.source, event.value = found["op"], found["source"], found["value"]
    return event


def _nonfinite_grads(named: list) -> list:
    return [n for n, p in named if p.grad is not None and not bool(torch.isfinite(p.grad).all())]


def _kind_of(t: torch.Tensor) -> str:
    if bool(torch.isnan(t).any()):
        return "nan"
    return "inf" if bool((t == math.inf).any()) else "-inf"


def _nonfinite_leaves(obj: Any) -> Iterator[torch.Tensor]:
    """The floating tensors in `obj` that hold a NaN/Inf, lazily (a sync each)."""
    for t in tree_leaves(obj):
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) \
                and t.numel() and not bool(torch.isfinite(t).all()):
            yield t


def _nonfinite_leaf(obj: Any) -> Optional[torch.Tensor]:
    return next(_nonfinite_leaves(obj), None)


_DUNDER_OPS = {"__truediv__": "/", "__rtruediv__": "/", "__itruediv__": "/=", "__div__": "/",
               "__pow__": "**", "__rpow__": "**", "__mul__": "*", "__rmul__": "*", "__matmul__": "@",
               "__add__": "+", "__radd__": "+", "__sub__": "-", "__rsub__": "-", "__neg__": "-"}
# Ops that make ±inf on purpose (attention masks): their infinities are not a bug.
_INTENDED_INF = {"masked_fill", "masked_fill_", "full", "fill_", "fill", "where", "new_full", "full_like"}


def _op_name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    return _DUNDER_OPS.get(name, name)


_TRACER_FILES = {__file__, tracer_module.__file__}


def _user_source() -> Optional[tuple]:
    """(file, line) of the user's code that called the current op: the innermost user frame
    before nndoctor's own (which called the model or the criterion)."""
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in _TRACER_FILES:  # the tracer itself
        frame = frame.f_back
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(_PACKAGE_DIR):
            return None
        if is_user_file(filename):
            return short_path(filename), frame.f_lineno
        frame = frame.f_back
    return None


class _Tracer(Tracer):
    """One forward/backward of exact localisation (slow: a sync per op; one step only).

    - the module stack (`Tracer`) notes the first module whose output is non-finite;
    - the function mode notes the ops that turned finite inputs into a NaN/Inf (the
      sources), with the innermost running module and the user's line that called it,
      follows their NaN/Inf through the ops that take it, and notes which module/op
      created each autograd node; `first_op` is the first source whose NaN/Inf reached a
      module's output or is the loss's own: one whose values every later op dropped is
      by design (T5's relative-position buckets take log(0) = -inf, then cast it to an
      integer bucket that a `where` discards);
    - `hook_backward` hooks every node of the loss's graph: the first node (in
      backward order) whose incoming gradients are finite and outgoing are not is
      where the gradient went non-finite.

    Hooked when made (the watch helper relies on it); `remove()` in `finally`.
    """

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.order: list = []
        self.first_module: Optional[str] = None
        self.first_module_value: Optional[str] = None
        self.sources: list = []  # the ops that turned finite inputs into NaN/Inf, in order
        self.first_backward: Optional[dict] = None
        self.created: dict = {}  # id(node) -> (node, info): who made each autograd node
        self._op = ""  # the running call's op name and whether its inputs were all finite
        self._inputs_finite = False
        self._taint: dict = {}  # id(non-finite tensor) -> (the tensor, the sources it comes from)
        self._in_sources: frozenset = frozenset()  # the running call's inputs' sources
        self._reached: set = set()  # sources whose NaN/Inf reached a module's output
        self.install()

    @property
    def first_op(self) -> Optional[dict]:
        """The first source that reached a module's output, or is the loss's (no module)."""
        return next((source for i, source in enumerate(self.sources)
                     if i in self._reached or source["module"] is None), None)

    def remove(self) -> None:
        super().remove()
        self.created, self._taint = {}, {}

    def on_enter(self, module, path, args):
        if path not in self.order:
            self.order.append(path)

    def _sources_of(self, leaves: list) -> frozenset:
        """The sources whose NaN/Inf the tensors among `leaves` carry."""
        sources: frozenset = frozenset()
        for t in leaves:
            made = self._taint.get(id(t)) if isinstance(t, torch.Tensor) else None
            if made is not None and made[0] is t:
                sources |= made[1]
        return sources

    def on_exit(self, module, path, args, output):
        if self._taint:
            self._reached |= self._sources_of(tree_leaves(output))
        if self.first_module is None:
            with torch._C.DisableTorchFunction():
                bad = _nonfinite_leaf(output)
                if bad is not None:
                    self.first_module, self.first_module_value = path, _kind_of(bad)

    def before_call(self, func, args, kwargs):
        self._op = name = _op_name(func)
        leaves = tree_leaves((args, kwargs))
        self._in_sources = sources = self._sources_of(leaves) if self._taint else frozenset()
        watch = not sources and name not in _INTENDED_INF \
            and not any(isinstance(a, float) and math.isinf(a) for a in leaves)
        self._inputs_finite = watch and _nonfinite_leaf((args, kwargs)) is None

    def on_call(self, func, args, kwargs, out, module_path):
        name = self._op
        info = None
        if self._inputs_finite or self._in_sources:
            bad = list(_nonfinite_leaves(out))
            if bad and self._inputs_finite:  # a new source
                info = self._info(name, module_path)
                self.sources.append(dict(info, value=_kind_of(bad[0])))
                made = frozenset((len(self.sources) - 1,))
            else:  # the NaN/Inf of earlier sources, carried on (or, all finite now, dropped)
                made = self._in_sources
            for t in bad:
                self._taint[id(t)] = (t, made)
        for t in tree_leaves(out):
            node = getattr(t, "grad_fn", None) if isinstance(t, torch.Tensor) else None
            if node is not None and id(node) not in self.created:
                self.created[id(node)] = (node, info or self._info(name, module_path))

    @staticmethod
    def _info(op: str, module_path: Optional[str]) -> dict:
        # module None: no module is running, so the op is the loss's (the criterion, loss_fn)
        return {"module": module_path, "op": op, "source": _user_source()}

    def hook_backward(self, loss: torch.Tensor) -> None:
        """Hook every node of the loss's graph; nodes no op call made (inside a composite op)
        are credited to the node that consumes their output."""
        if loss.grad_fn is None:
            return
        infos = {}
        frontier: list = [(loss.grad_fn, None)]
        while frontier:
            node, parent_info = frontier.pop()
            if node is None or id(node) in infos:
                continue
            made = self.created.get(id(node))
            info = made[1] if made else dict(parent_info or {"module": None, "op": None, "source": None},
                                             op=_node_op(node))
            infos[id(node)] = info
            self.handles.append(node.register_hook(self._backward_hook(info)))
            frontier.extend((nxt, info) for nxt, _ in node.next_functions)

    def _backward_hook(self, info: dict):
        def hook(grad_inputs, grad_outputs):
            if self.first_backward is not None:
                return
            if _nonfinite_leaf(list(grad_outputs)) is None:
                bad = _nonfinite_leaf(list(grad_inputs))
                if bad is not None:
                    self.first_backward = dict(info, value=_kind_of(bad))
        return hook


def _node_op(node) -> str:
    """`SqrtBackward0` -> `sqrt`."""
    return node_name(node).lower() or "?"


def node_name(node) -> str:
    """An autograd node's op, as its class names it: `NllLossBackward0` -> `NllLoss`."""
    return re.sub(r"Backward\d*$", "", type(node).__name__ if not hasattr(node, "name") else node.name())
