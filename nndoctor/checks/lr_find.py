"""lr-find: the LR range test (Smith 2015; fastai's `lr_find`) on torch-lr-finder (SPEC §2, §4).

torch-lr-finder's `LRFinder.range_test` trains the model for `num_iter` steps
while the LR grows exponentially from `start_lr` to `end_lr`, recording the
loss smoothed with an EMA (`smooth_f`) and stopping when it passes
`diverge_th` × its best. We wrap it so the user sees only nndoctor:

- its `tqdm` bar is replaced by `session.progress("lr-find", num_iter)` and its
  `print`s are captured (we shadow the two names in its module while it runs);
- batches go through its `TrainDataLoaderIter` hook as whole `engine.Batch`es,
  and a wrapper module computes the session's loss (criterion, `loss_fn`, a
  Hugging Face `.loss`, `model(*inputs)` or `model(**batch)`), so every batch
  form of SPEC §1 works; the finder's criterion just passes that loss through;
- it trains on a fixed set of the session's cached batches (deterministic);
- its `reset()` restores the model and optimizer, and the runner's
  `session.preserved()` restores everything else (RNGs, modes, gradients).

Three suggestions are read from the recorded curve, all reported: `valley`
(fastai's default), `steepest` (torch-lr-finder's `plot(suggest_lr=True)`) and
`min/10` (fastai's `minimum`). `lr-too-high` / `lr-too-low` compare the
optimizer's current LR with them.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import types
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from ..engine import SECOND_COPY_MAX_MB, Session, Skip, tensors_mb
from ..findings import make_finding
from . import Outcome

NAME = "lr-find"
DEFAULTS = {
    "start_lr": 1e-7,  # fastai's and SPEC §2's range: 1e-7 .. 10
    "end_lr": 10.0,
    "num_iter": 100,  # SPEC §2 / fastai: 100 steps
    "step_mode": "exp",  # exponential LR growth (torch-lr-finder's default, fastai's schedule)
    "smooth_f": 0.05,  # torch-lr-finder's defaults: EMA of the loss ...
    "diverge_th": 5,  # ... and stop once the loss passes 5 x its best
    "method": "valley",  # which suggestion is *the* suggested LR: valley, steepest or min/10
    "plot": None,  # a PNG path: loss against LR, the suggestion and the current LR marked
    # Where torch-lr-finder keeps its copy of the model and optimizer state during the test:
    # "memory", "disk" (a temporary file; `cache_dir` to choose the folder) or "auto": disk
    # once that state passes AUTO_DISK_MB. nndoctor already holds one snapshot of the weights
    # to restore them, so an in-memory cache is a second copy (issue 6: a model too large to
    # copy twice is diagnosed holding one extra copy).
    "cache": "auto",
    "cache_dir": None,
}
CACHES = ("auto", "memory", "disk")
# Below it an in-memory copy costs less than writing and re-reading it (~0.5 s per GB on a
# laptop SSD); above it, it would be a second copy of the state (engine.SECOND_COPY_MAX_MB).
AUTO_DISK_MB = SECOND_COPY_MAX_MB
METHODS = ("valley", "steepest", "min/10")
WHY = {
    "valley": "fastai's default: half-way into the longest stretch where the smoothed loss keeps "
              "falling, which is steady on noisy curves where the single steepest point is not",
    "steepest": "torch-lr-finder's and Lightning's: where the smoothed loss falls fastest",
    "min/10": "fastai's `minimum`: a tenth of the LR at the lowest loss, safely below where it turns up",
}

# torch-lr-finder's plot(): the steepest point ignores the first 10 and the last 5 points,
# where the loss has not moved yet (LR too small) or blows up (its smoothing lags).
STEEP_SKIP_START = 10
STEEP_SKIP_END = 5
# fastai's lr_find(): valley and minimum read losses[num_it // 10 : -5].
VALLEY_SKIP_END = 5
MIN_POINTS = STEEP_SKIP_START + STEEP_SKIP_END + 2  # torch-lr-finder's own minimum to suggest
# "Never descends": the lowest smoothed loss is less than 5% under the highest before it.
# Measured (seed 0): xor 69%, mlp 13%, simple_cnn 7%, bottleneck 6%; text_classifier 0.7%
# (its LSTM needs more than the test's ~15 steps at useful LRs to pick up the token counts).
MIN_DESCENT = 0.05
# lr-too-high, all three: the current LR is > 10x the suggested LR, above the LR where the
# smoothed loss bottomed out (fastai: "a tenth of that point"), and there the loss had climbed
# back by at least half of its descent (or the test stopped, diverged, before reaching it).
# Measured at seed 0: transformer_encoder's Adam 1e-3 is 12x its valley and at its minimum,
# but had climbed back 4%: silent; simple_cnn's SGD 0.05 (momentum 0.9) had climbed back
# 12.7x its descent (training at it sits at chance, ln 10, for 8 epochs; 0.01 reaches 0.02),
# high_lr_mlp's Adam 1.0 2.0x.
HIGH_FACTOR = 10.0
RISE_BACK = 0.5
# lr-too-low: two orders of magnitude under the suggested LR AND below the LR where the
# longest descent began (the loss barely moves there): ~100x slower progress than needed.
# Healthy samples sit at >= 0.1x their suggestion.
LOW_FACTOR = 100.0
# Distinct batches the test cycles through: enough that it is not one batch memorised (the
# loss falls mainly from LRs where one step already moves it), few enough to keep on the
# device (20 batches of 256 ImageNet images are ~3 GB).
MAX_BATCHES = 20


@dataclass
class Curve:
    """What the range test recorded (torch-lr-finder's history) and how it ended."""

    lrs: list
    losses: list  # smoothed as torch-lr-finder smooths them
    num_iter: int  # asked for
    stop: Optional[str] = None  # None (ran to the end), "diverged" or "non-finite"
    messages: list = field(default_factory=list)  # what torch-lr-finder printed (kept out of sight)


# --------------------------------------------------------------------------- suggestions

def valley(lrs, losses, num_it=None) -> tuple:
    """fastai's `valley` (fastai/callback/schedule.py), transcribed: the longest (not
    necessarily contiguous) decreasing subsequence of the losses; the suggestion is a
    third plus a sixth of the way into it. Returns (lr, index)."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    # NB: fastai's max_start is one before the valley's first point, so a valley of <= 3
    # points at index 0 gives idx = -1 (its last LR). Callers treat idx < 0 as no valley.
    return (float(lrs[idx]) if idx >= 0 else None), idx


def steepest(lrs, losses) -> tuple:
    """torch-lr-finder's `plot(suggest_lr=True)`: argmin of np.gradient of the losses
    between the first STEEP_SKIP_START and the last STEEP_SKIP_END points. (lr, index)."""
    end = len(losses) - STEEP_SKIP_END
    lrs, losses = lrs[STEEP_SKIP_START:end], losses[STEEP_SKIP_START:end]
    i = int(np.gradient(np.array(losses, dtype=float)).argmin())
    return float(lrs[i]), i + STEEP_SKIP_START


def minimum(lrs, losses) -> tuple:
    """fastai's `minimum`: a tenth of the LR at the lowest loss. (lr / 10, index of the minimum)."""
    i = int(np.argmin(np.array(losses, dtype=float)))
    return float(lrs[i]) / 10, i


def suggest(curve: Curve, method: str = "valley") -> dict:
    """The suggestions on a recorded curve, or the reason there are none.

    Returns {"suggestions": {...}, "suggested_lr", "method", "min_loss_lr", "valley_start_lr",
    "reason"}; "reason" is set (and the LRs None) when the curve cannot give a sensible LR."""
    if method not in METHODS:
        raise ValueError(f"lr-find.method must be one of {', '.join(METHODS)}, not {method!r}")
    lrs, losses = list(curve.lrs), list(curve.losses)
    # fastai drops everything from the first NaN on.
    finite = next((i for i, v in enumerate(losses) if not math.isfinite(v)), len(losses))
    lrs, losses = lrs[:finite], losses[:finite]
    result = {"suggestions": {m: None for m in METHODS}, "suggested_lr": None, "method": method,
              "min_loss_lr": None, "valley_start_lr": None, "reason": None}
    if len(losses) < MIN_POINTS:
        if curve.stop is None:
            result["reason"] = (f"only {len(losses)} steps recorded; at least {MIN_POINTS} are needed "
                                f"to suggest an LR (raise num_iter)")
        else:
            last = lrs[-1] if lrs else curve.lrs[0] if curve.lrs else None
            at = f" at LR {last:.3g}" if last is not None else ""
            result["reason"] = (f"the loss {'became NaN/Inf' if curve.stop == 'non-finite' else 'diverged'} "
                                f"after {len(curve.losses)} steps{at}, before any stretch of descent: "
                                f"no usable LR (check the data, the loss and the init before the LR)")
        return result
    descent, peak, lowest = descent_of(losses)
    result["descent"] = descent
    if descent < MIN_DESCENT:
        result["reason"] = (f"the loss never descends: its lowest point is only {descent:.1%} below the "
                            f"highest before it ({lowest:.4g} vs {peak:.4g}) over LRs {lrs[0]:.3g}.."
                            f"{lrs[-1]:.3g}, so no LR can be read from the curve; the task may need more "
                            f"than {len(losses)} steps to show progress (raise num_iter), or the model "
                            f"cannot learn (see the overfit check)")
        return result
    start = curve.num_iter // 10  # fastai: losses[num_it // 10 : -5]
    end = max(len(losses) - VALLEY_SKIP_END, start + 1)
    v_lrs, v_losses = lrs[start:end], losses[start:end]
    valley_lr, idx = valley(v_lrs, v_losses, curve.num_iter)
    if valley_lr is None:
        result["reason"] = "the loss has no stretch of descent long enough to suggest an LR"
        return result
    min_lr, min_idx = minimum(v_lrs, v_losses)
    steep_lr, _ = steepest(lrs, losses)
    result["suggestions"] = {"valley": valley_lr, "steepest": steep_lr, "min/10": min_lr}
    result["suggested_lr"] = result["suggestions"][method]
    result["min_loss_lr"] = float(v_lrs[min_idx])
    result["valley_start_lr"] = float(v_lrs[_valley_start(v_losses)])
    return result


def descent_of(losses) -> tuple:
    """(relative drop, peak, lowest): how far the lowest loss lies below the highest loss
    before it. The EMA starts at the first batch's loss, which may happen to be low, so the
    first point alone is a noisy reference."""
    i = int(np.argmin(np.array(losses, dtype=float)))
    lowest, peak = losses[i], max(losses[:i + 1])
    return ((peak - lowest) / abs(peak) if peak else 0.0), peak, lowest


def _valley_start(losses) -> int:
    """The first point of fastai's longest decreasing subsequence (its max_start + 1)."""
    n = len(losses)
    lds, prev = [1] * n, [-1] * n
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i], prev[i] = lds[j] + 1, j
    i = max(range(n), key=lambda k: (lds[k], -k))
    while prev[i] >= 0:
        i = prev[i]
    return i


# --------------------------------------------------------------------------- the range test

class _LossModel(nn.Module):
    """What LRFinder trains: takes a whole Batch, returns the session's loss for it.

    The user's model is a registered submodule, so the finder's state_dict cache and
    reset() cover exactly its parameters and buffers."""

    def __init__(self, session: Session, model: nn.Module):
        super().__init__()
        self.model = model
        self._loss = session.loss  # a bound method, not a module: not part of the state

    def forward(self, batch):
        return self._loss(batch, model=self.model)


def _passthrough_criterion(loss, _labels):
    return loss


def range_test(session: Session, settings: dict) -> Curve:
    """Run torch-lr-finder's range test on the session; the model and optimizer are reset after."""
    tlf = _import_lr_finder()  # lazy, and without the matplotlib.pyplot it imports

    num_iter = int(settings["num_iter"])
    if num_iter < 2:
        raise ValueError(f"lr-find.num_iter must be at least 2, not {num_iter}")
    # A fixed set of the session's cached batches (shared with the other checks), cycled:
    # deterministic, and bounded in memory however long the test.
    batches = session.batches(min(num_iter, MAX_BATCHES))

    class BatchIter(tlf.TrainDataLoaderIter):
        # torch-lr-finder's hook for batches that are not (inputs, labels): the whole Batch is
        # the "input" (no .to(): its _move_to_device leaves it alone; it is on the device).
        def inputs_labels_from_batch(self, batch_data):
            return batch_data, None

    optimizer = session.optimizer
    # A scheduler attached to the optimizer leaves "initial_lr" in its groups, and LRFinder
    # refuses such an optimizer; the runner's preserved() puts the keys back.
    for group in optimizer.param_groups:
        group.pop("initial_lr", None)
    on_disk, cache_dir = _cache_on_disk(session, settings)
    finder = tlf.LRFinder(_LossModel(session, session.model), optimizer, _passthrough_criterion,
                          device=session.device, memory_cache=not on_disk, cache_dir=cache_dir)
    messages: list = []

    def capture_print(*args, **kwargs):
        messages.append(" ".join(str(a) for a in args))

    try:
        with session.progress("lr-find", num_iter) as advance:
            def steps(iterable):  # stands in for tqdm(range(num_iter))
                for i in iterable:
                    yield i
                    advance()
                    history = finder.history["loss"]
                    if history and not math.isfinite(history[-1]):
                        return  # torch-lr-finder would go on with NaN for every remaining step

            with _patched(tlf, tqdm=steps, print=capture_print), warnings.catch_warnings():
                # Its schedulers call get_lr() directly; torch warns about that on every step.
                warnings.filterwarnings("ignore", message=r".*get_last_lr\(\).*")
                warnings.filterwarnings("ignore", message=r".*lr_scheduler.step\(\).*")
                finder.range_test(BatchIter(batches), start_lr=float(settings["start_lr"]),
                                  end_lr=float(settings["end_lr"]), num_iter=num_iter,
                                  step_mode=str(settings["step_mode"]),
                                  smooth_f=float(settings["smooth_f"]),
                                  diverge_th=float(settings["diverge_th"]))
    finally:
        # Free the gradients and the optimizer's state before reset() loads its copy back:
        # with it cached on disk, that keeps the peak at one extra copy of the weights.
        optimizer.zero_grad(set_to_none=True)
        optimizer.state.clear()
        finder.reset()
    lrs, losses = list(finder.history["lr"]), [float(v) for v in finder.history["loss"]]
    stop = None
    if losses and not math.isfinite(losses[-1]):
        stop = "non-finite"
    elif any("diverged" in m for m in messages):
        stop = "diverged"
    return Curve(lrs=lrs, losses=losses, num_iter=num_iter, stop=stop, messages=messages)


def _cache_on_disk(session: Session, settings: dict) -> tuple:
    """(whether torch-lr-finder caches the model and optimizer state on disk, its folder)."""
    mode, cache_dir = settings.get("cache", "auto"), settings.get("cache_dir")
    if mode not in CACHES:
        raise ValueError(f"lr-find.cache must be one of {', '.join(CACHES)}, not {mode!r}")
    if cache_dir is not None:
        cache_dir = os.path.expanduser(str(cache_dir))
        if not os.path.isdir(cache_dir):
            raise ValueError(f"lr-find.cache_dir {cache_dir!r} is not a folder")
    if mode == "auto":
        tensors = list(session.model.state_dict().values())
        tensors += [v for state in session.optimizer.state.values() for v in state.values()
                    if torch.is_tensor(v)]
        mode = "disk" if tensors_mb(tensors) > AUTO_DISK_MB else "memory"
    return mode == "disk", cache_dir


class _LazyPyplot(types.ModuleType):
    """Stands in for `matplotlib.pyplot` in torch-lr-finder's module, which imports it at
    module level but uses it only in `LRFinder.plot()` (nndoctor draws its own plot, on
    demand): the real pyplot is imported on first use. Importing it costs ~0.5-0.9 s, more
    than the whole range test on a small model (bench/bench.py)."""

    def __getattr__(self, name):
        import matplotlib.pyplot as plt

        return getattr(plt, name)


def _import_lr_finder():
    """`torch_lr_finder.lr_finder`, imported with a lazy pyplot unless matplotlib.pyplot is
    already loaded. The stand-ins are in sys.modules only while that one module imports."""
    loaded = sys.modules.get("torch_lr_finder.lr_finder")
    if loaded is not None:
        return loaded
    if "matplotlib.pyplot" in sys.modules:
        import torch_lr_finder.lr_finder as tlf

        return tlf
    pyplot = _LazyPyplot("matplotlib.pyplot")
    stand_ins = {"matplotlib.pyplot": pyplot}
    if "matplotlib" not in sys.modules:
        package = types.ModuleType("matplotlib")
        package.__path__ = []  # a package, for `import matplotlib.pyplot`
        package.pyplot = pyplot
        stand_ins["matplotlib"] = package
    sys.modules.update(stand_ins)
    try:
        import torch_lr_finder.lr_finder as tlf
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return tlf


@contextlib.contextmanager
def _patched(module, **names):
    """Shadow module-level names (its `tqdm`, the builtin `print`) while a block runs."""
    missing = object()
    saved = {name: module.__dict__.get(name, missing) for name in names}
    module.__dict__.update(names)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = value


# --------------------------------------------------------------------------- the check

def run(session: Session, settings: dict) -> Outcome:
    method = str(settings.get("method") or "valley")
    if method not in METHODS:
        raise ValueError(f"lr-find.method must be one of {', '.join(METHODS)}, not {method!r}")
    current_lr = float(session.optimizer.param_groups[0]["lr"])
    curve = range_test(session, settings)
    if curve.losses and not math.isfinite(curve.losses[0]):
        raise Skip(f"the loss is NaN/Inf at the test's first step (LR {curve.lrs[0]:.3g}), whatever "
                   "the LR: the nan check says where it comes from")
    found = suggest(curve, method)
    section = {
        "suggested_lr": found["suggested_lr"],
        "method": method,
        "why": WHY[method],
        "suggestions": found["suggestions"],
        "current_lr": current_lr,
        "min_loss_lr": found["min_loss_lr"],
        "stopped": curve.stop,
        "reason": found["reason"],
        "lrs": [float(v) for v in curve.lrs],
        "losses": [_json_float(v) for v in curve.losses],
    }
    outcome = Outcome(metrics={"suggested_lr": found["suggested_lr"], "current_lr": current_lr,
                               "method": method, "suggestions": found["suggestions"],
                               "min_loss_lr": found["min_loss_lr"], "steps": len(curve.losses),
                               "descent": found.get("descent"),
                               "stopped": curve.stop})
    if found["reason"]:
        outcome.metrics["reason"] = found["reason"]
    else:
        outcome.findings += verdict(current_lr, found, curve)
    plot_path = settings.get("plot")
    if plot_path:
        from ..plots import lr_plot  # lazy: matplotlib

        lr_plot(str(plot_path), curve.lrs, curve.losses, found["suggestions"], method, current_lr)
        section["plot"] = outcome.metrics["plot"] = str(plot_path)
    outcome.sections["lr_find"] = section
    return outcome


def verdict(current_lr: float, found: dict, curve: Curve) -> list:
    suggested, method = found["suggested_lr"], found["method"]
    min_loss_lr, start_lr = found["min_loss_lr"], found["valley_start_lr"]
    evidence = {"current_lr": current_lr, "suggested_lr": suggested, "method": method,
                "min_loss_lr": min_loss_lr, "valley_start_lr": start_lr,
                "suggestions": found["suggestions"], "ratio": current_lr / suggested}
    if current_lr > HIGH_FACTOR * suggested and current_lr > min_loss_lr:
        from ..plots import interpolate_log

        points = [(lr, loss) for lr, loss in zip(curve.lrs, curve.losses) if math.isfinite(loss)]
        _, peak, lowest = descent_of([p[1] for p in points])
        beyond = current_lr > points[-1][0]
        if beyond and curve.stop is not None:
            where = (f"the range test's loss {'became NaN/Inf' if curve.stop == 'non-finite' else 'diverged'} "
                     f"at {points[-1][0]:.3g}, before reaching it")
            evidence["stopped_at_lr"] = points[-1][0]
        elif beyond:
            return []  # above the tested range, which ended without diverging: no evidence either way
        else:
            at_current = interpolate_log(current_lr, points)
            rise_back = (at_current - lowest) / (peak - lowest)
            evidence.update(loss_at_current_lr=at_current, lowest_loss=lowest, rise_back=rise_back)
            if rise_back < RISE_BACK:
                return []
            where = (f"there the range test's loss ({at_current:.4g}) had climbed back "
                     f"{rise_back:.0%} of its descent (from {peak:.4g} to its lowest, {lowest:.4g} at LR "
                     f"{min_loss_lr:.3g})")
        return [make_finding(
            "lr-too-high", NAME, None,
            f"The optimizer's LR {current_lr:.3g} is {current_lr / suggested:.0f}x the suggested "
            f"{suggested:.3g} ({method}), and {where}.", evidence)]
    if current_lr * LOW_FACTOR < suggested and current_lr < start_lr:
        return [make_finding(
            "lr-too-low", NAME, None,
            f"The optimizer's LR {current_lr:.3g} is {suggested / current_lr:.0f}x below the suggested "
            f"{suggested:.3g} ({method}) and below {start_lr:.3g}, where the range test's loss only "
            f"began to fall.", evidence)]
    return []


def _json_float(v: float):
    return v if math.isfinite(v) else None
