"""lr-find: the LR range test (Smith 2015; fastai's `lr_find`), then a race (SPEC §2, §4).

The measuring is in `probes/lr_range.py`: torch-lr-finder's range test, wrapped so the
user sees only nndoctor (its bar and prints replaced), and the race's trainer. Both run on
a fixed set of the session's cached batches (deterministic) and put the model, optimizer
and modes back; the runner's `session.preserved()` restores everything else (RNGs,
gradients). This module judges what they record.

Three classic suggestions are read from the recorded curve, all reported: `valley`
(fastai's default), `steepest` (torch-lr-finder's `plot(suggest_lr=True)`) and
`min/10` (fastai's `minimum`). Each fails on some kind of model (issue 15: steepest
diverges on Adam, valley trains 3x worse than the best on SGD), so the curve only
*brackets* the usable range (from where the loss starts falling to its lowest point),
and a short race *confirms*: the user's own LR, points a quarter decade apart around the
bracket's top (where the LRs that train best lie, the smoothed curve lagging) and the
three rules where they fall elsewhere each train from the same initial state on the same
batches, halved by successive halving (Karnin et al. 2013; Jamieson & Talwalkar 2016)
within `race_steps` steps (default: the range test's own `num_iter`). The winner is the
`race` suggestion (the default `method`); `lr-too-high` / `lr-too-low` come from the
race only: the user's LR, trained alongside the winner, compared with it at the same step
count, diverged, never moved the loss, or made a small fraction of its progress (`compare`),
and still did after both trained on to twice the steps (`confirm`).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..engine.session import SECOND_COPY_MAX_MB, Session, Skip, tensors_mb
from ..probes import lr_range
from ..probes.lr_range import Curve
from ..report.findings import make_finding
from . import Outcome

__all__ = ["Curve", "run", "suggest"]

NAME = "lr-find"
DEFAULTS = {
    "start_lr": 1e-7,  # fastai's and SPEC §2's range: 1e-7 .. 10
    "end_lr": 10.0,
    "num_iter": 100,  # SPEC §2 / fastai: 100 steps
    "step_mode": "exp",  # exponential LR growth (torch-lr-finder's default, fastai's schedule)
    "smooth_f": 0.05,  # torch-lr-finder's defaults: EMA of the loss ...
    "diverge_th": 5,  # ... and stop once the loss passes 5 x its best
    # Which LR is *the* suggested one: race (default), valley, steepest or min/10 (min10).
    "method": "race",
    # Steps the race may take in all; None: the range test's own num_iter (issue 15: the
    # race costs at most about what the range test costs). 0 turns the race off, and with
    # it the lr-too-high / lr-too-low verdicts (only LR 0 is still judged).
    "race_steps": None,
    "plot": None,  # a PNG path: loss against LR, the suggestion and the current LR marked
    # Where torch-lr-finder keeps its copy of the model and optimizer state during the test:
    # "memory", "disk" (a temporary file; `cache_dir` to choose the folder) or "auto": disk
    # once that state passes AUTO_DISK_MB. nndoctor already holds one snapshot of the weights
    # to restore them, so an in-memory cache is a second copy (issue 6: a model too large to
    # copy twice is diagnosed holding one extra copy).
    "cache": "auto",
    "cache_dir": None,
}
DEFAULT_NUM_ITER = 100  # DEFAULTS["num_iter"], typed
CACHES = ("auto", "memory", "disk")
# Below it an in-memory copy costs less than writing and re-reading it (~0.5 s per GB on a
# laptop SSD); above it, it would be a second copy of the state (engine.SECOND_COPY_MAX_MB).
AUTO_DISK_MB = SECOND_COPY_MAX_MB
RULES = ("valley", "steepest", "min/10")  # the classic rules read from the curve
METHODS = ("race",) + RULES
METHOD_ALIASES = {"min10": "min/10"}  # the CLI's spelling (no "/" in an option value)
WHY = {
    "race": "the lowest loss after the race: every candidate trained the same steps from the same "
            "initial state on the same batches, successive halving keeping the better half each round",
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
# The race. Entrants besides the user's LR and the named rules: points below the bracket's
# top (the LR of the curve's lowest smoothed loss) at OFFSETS decades, a quarter decade apart
# over the first DENSE_DECADES and coarser below. The smoothed curve lags ~1.6 decades (issue
# 13), so the LRs that train best lie below its lowest point (measured on bench/lr_bench.py's
# tasks, seeds 0-2, the CNN seed 0: the best of 11 LRs a quarter decade apart below the top,
# each trained 200 steps, lay 0-1.75 decades below it, 0.5-1.0 on 9 of 13); 5 points evenly
# over the whole bracket (up to 8 decades) left gaps of 0.7 decades there.
# One point half a decade above the top: SGD with momentum on a BatchNorm CNN trains best at
# or above it (bench/lr_bench.py's CNN: the top 0.01 was the best of 11 LRs; simple_cnn's 0.01
# is 0.6 decades above its top), and a point that diverges costs only its first round.
OFFSETS = (-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
DENSE_DECADES = 1.0
# Which dense points enter first when a cut budget takes fewer entrants (`entrants_for`): the
# quarter and half decade below the top, where the sweep's best lay most often (bench notes).
DENSE_ORDER = {0.25: 0.0, 0.5: 1.0, 0.0: 2.0, 0.75: 3.0, -0.5: 4.0, 1.0: 5.0}
# The fewest steps an entrant's first round may have: 3 pre-step losses, 2 of them after a step.
MIN_ROUND_STEPS = 3
# Where the bracket starts: the LR by which the smoothed loss has fallen a tenth of its whole
# descent. Before that the loss "falls" only by the EMA's drift and noise: racing LRs there
# (10^-7 .. 10^-5 on the samples) spends entrants on LRs that cannot win.
BRACKET_START = 0.1
# A curve without a readable descent brackets the 3 decades below its lowest point: the
# range test's LR grows 8 decades in 100 steps, so its lowest point lies at most a few
# decades above where training works (its EMA lags ~1.6 decades, issue 13).
BLIND_DECADES = 3
# ... unless that lowest point lies among the curve's first STEEP_SKIP_START points, where the
# LR is too small to move anything and the "lowest" loss is the noise of an unmoved model (a
# BatchNorm CNN on SGD with momentum, whose loss rises before it falls, at 2 of 10 seeds of
# bench/lr_bench.py: the race then tried 3e-9..3e-7 and "won" at 5.6e-8, 1.478 against a start
# of 1.449). The curve says nothing about where training works there, and the user's LR is the
# best guess: the bracket is then centred on it, its top BLIND_ABOVE decades above, the race's
# dense points a quarter decade apart on both sides of it.
BLIND_ABOVE = 0.5
# Entrants closer than 0.2 decade (1.58x) are one entrant: the race's losses cannot tell
# them apart in so few steps (its rules are all kept in that entrant's `rule`); under the
# OFFSETS' quarter decade, so two of its points never merge.
MERGE_DECADES = 0.2
# At most this many entrants: with successive halving over ceil(log2 8) = 3 rounds, each of
# the 8 gets race_steps / 24 steps in the first round (4 at the default 100).
MAX_ENTRANTS = 8
# An entrant's race loss: the mean loss over the last steps of its round (before each of
# those steps, so on batches it had not yet trained on in that position); every entrant of a
# round sees the same batches at the same step, so the comparison is paired.
SCORE_WINDOW = 4
# An entrant whose loss passes this many times the race's starting loss has diverged (torch-
# lr-finder's diverge_th, 5) and stops: its race loss is its last, the rest of its round unspent.
RACE_DIVERGE = 5.0
# The verdict compares the user's LR and the winner at the same step count, on the same
# batches from the same state: "behind" when the user's LR made less than 1/BEHIND of the
# winner's progress (start loss minus race loss) and its loss is above the winner's by
# BEHIND_MARGIN of the start loss. Comparing the user's loss after n steps with the winner's
# after n/8 (the old time ratio) called healthy programs' LRs too low: a high LR's first few
# steps on a regression or a language model (own_mse_regressor, the zoo's gru_lm at seed 4)
# drop the loss faster than a lower LR can in 8x the steps, and the lower LR catches up later.
# The ratio is asymmetric. An LR above the winner's that is behind at the same steps fails
# by instability (oscillation, dead ReLUs) and does not catch up: BEHIND = 4 (measured: Adam
# 0.1 on bench/real_bugs/dying_relu_adam_high_lr.py, ReLUs dead, 13x behind 1.2e-3 after 143
# steps; healthy programs whose LR is above the winner's, e.g. the zoo's resnet18 at SGD 0.1,
# 1.5x). An LR below the winner's is slow at first in proportion to the LR and catches up
# later, so its ratio is large early on healthy programs: own_mse_regressor (Adam 1e-3,
# targets ~10) 27x after 18 steps and 8.3x after 36; the zoo's gru_lm at seed 4 9.3x;
# keras_init_classifier (Adam 3e-4) 8.1x after 143; the zoo at seed 0 (20 models, bench/zoo.py
# --checks lr-find): at most 17.6x (wav2vec2, AdamW 3e-4), then lstm_classifier 12.1x and
# gru_lm 10.4x, the rest under 4x. BEHIND_LOW = 30, after a confirmation
# at twice the steps, is over all of those; an LR 100x too low, or one that never moves the
# loss ("still"), is found anyway. Broken samples whose bug weakens the gradient read 12-28x
# (dead_relu_mlp 15x, softmax_ce_mlp 19x, unscaled_target_mlp 28x): below it, so their LR is
# not called too low, a distraction from their bug.
BEHIND = 4.0
BEHIND_LOW = 30.0
BEHIND_MARGIN = 0.05
# A verdict in sight is confirmed by training the user's LR and the winner on, doubling their
# steps, up to this share of the race's budget in all (`confirm`).
CONFIRM_SHARE = 2.5
# "Never moved the loss": its race loss within 1% of the start while the winner made progress.
STILL = 0.01
# The race shows nothing when even the winner's progress is under this share of the start
# loss (as MIN_DESCENT for the curve): no verdict then.
RACE_MIN_PROGRESS = MIN_DESCENT
# Distinct batches the test cycles through: enough that it is not one batch memorised (the
# loss falls mainly from LRs where one step already moves it), few enough to keep on the
# device (20 batches of 256 ImageNet images are ~3 GB).
MAX_BATCHES = 20
# A range test cut below the default num_iter (engine/budget.py) narrows its window around the
# user's LR (`range_window`): to the default's decades x num_iter / 100, not under this many
# (at 20 points, 3 decades: 6.7 points a decade, against 2.5 over the full 8).
MIN_WINDOW_DECADES = 3.0


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
    result: dict[str, Any] = {"suggestions": {m: None for m in RULES}, "suggested_lr": None,
                              "method": method, "min_loss_lr": None, "valley_start_lr": None, "reason": None}
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
    result["suggested_lr"] = result["suggestions"].get(method)  # "race": set after the race
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

def range_test(session: Session, settings: dict) -> Curve:
    """The range test (probes.lr_range) on the session's model, optimizer and a fixed set of
    its cached batches (shared with the other checks, cycled: deterministic, and bounded in
    memory however long the test); the model, optimizer and modes are as before after it."""
    num_iter = int(settings["num_iter"])
    if num_iter < 2:
        raise ValueError(f"lr-find.num_iter must be at least 2, not {num_iter}")
    batches = session.batches(min(num_iter, MAX_BATCHES))
    on_disk, cache_dir = _cache_on_disk(session, settings)
    model = session.model
    with session.progress("lr-find", num_iter) as advance:
        return lr_range.range_test(
            model, session.optimizer, batches, lambda batch: session.loss(batch, model=model),
            start_lr=float(settings["start_lr"]), end_lr=float(settings["end_lr"]), num_iter=num_iter,
            step_mode=str(settings["step_mode"]), smooth_f=float(settings["smooth_f"]),
            diverge_th=float(settings["diverge_th"]), device=session.device,
            cache_on_disk=on_disk, cache_dir=cache_dir, tick=advance)


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


# --------------------------------------------------------------------------- the race

@dataclass
class Entrant:
    """One LR in the race and how it did."""

    lr: float
    rules: list  # why it entered: "race bracket", "valley", "steepest", "min/10", "current"
    loss: float = math.inf  # race loss at the last round it ran (SCORE_WINDOW mean)
    steps: int = 0  # steps it trained
    rounds: int = 0  # rounds it ran
    diverged: bool = False
    # diverged only by passing RACE_DIVERGE x the start loss, every loss finite: a spike a
    # BatchNorm net at a high LR can come back from (the user's LR is trained on before a verdict)
    spiked: bool = False
    history: list = field(default_factory=list)  # every pre-step loss it recorded

    def loss_at(self, steps: int) -> float:
        """Its race loss as it stood after `steps` steps (the SCORE_WINDOW mean before them)."""
        tail = self.history[max(0, steps - SCORE_WINDOW):max(steps, 1)]
        return float(sum(tail) / len(tail)) if tail and all(map(math.isfinite, tail)) else math.inf

    @property
    def rule(self) -> str:
        return ", ".join(self.rules)


@dataclass
class Race:
    entrants: list  # every Entrant, in LR order
    winner: Optional[Entrant]
    steps: int  # steps taken in all (the race's extra cost)
    start_loss: float  # the loss before the first step (the same for every entrant)
    final_steps: int  # steps each finalist trained
    confirm_steps: int = 0  # steps the winner and the user's LR trained more to confirm a verdict
    finalists: list = field(default_factory=list)  # those of the last round, best first
    # The initial model's loss on each of the race's batches (RaceTrainer.baseline): progress
    # at step n is measured from its mean over the same window of batches. Empty: from start_loss.
    baseline: list = field(default_factory=list)

    def reference(self, steps: int) -> float:
        """The loss an LR of 0 has over the SCORE_WINDOW batches before step `steps`."""
        if not self.baseline:
            return self.start_loss
        window = [self.baseline[i % len(self.baseline)] for i in range(max(0, steps - SCORE_WINDOW), max(steps, 1))]
        return float(sum(window) / len(window))


def entrants_for(budget: int) -> int:
    """How many entrants a race of `budget` steps takes: the most (up to MAX_ENTRANTS) whose
    first round still gives each MIN_ROUND_STEPS steps (n x ceil(log2 n) x MIN_ROUND_STEPS <=
    budget), at least 2. A range test cut to 20 points (engine/budget.py) races 3: with 8, a
    first round of 1 step scores every entrant on the same initial loss."""
    n = MAX_ENTRANTS
    while n > 2 and n * math.ceil(math.log2(n)) * MIN_ROUND_STEPS > budget:
        n -= 1
    return n


def entrants_from(bracket: tuple, named: dict, current_lr: Optional[float],
                  most: int = MAX_ENTRANTS) -> list:
    """The race's entrants: the user's LR, points below the bracket's top at OFFSETS decades
    (those not below the bracket's low end), and the named suggestions ({rule: lr}); an LR
    within MERGE_DECADES of one already in joins it (its rule is listed there), at most
    `most` in all: the user's LR first, then the dense points (within DENSE_DECADES of the
    top; those just below it first, where the best usually lies), the named rules, the coarse
    points. In LR order."""
    low, high = bracket
    grid = [(high / 10 ** o, o) for o in OFFSETS if high / 10 ** o >= low / 10 ** MERGE_DECADES]
    if not grid:
        grid = [(high, 0.0)]
    points = [(current_lr, "current")] if current_lr and current_lr > 0 else []
    dense = sorted(((lr, o) for lr, o in grid if o <= DENSE_DECADES), key=lambda p: DENSE_ORDER.get(p[1], 9.0))
    points += [(lr, "race bracket") for lr, _ in dense]
    priority = {"valley": 1, "steepest": 2, "min/10": 3}
    points += sorted(((lr, rule) for rule, lr in named.items() if lr), key=lambda p: priority.get(p[1], 9))
    points += [(lr, "race bracket") for lr, o in grid if o > DENSE_DECADES]
    entrants: list = []
    for lr, rule in points:
        near = next((e for e in entrants if abs(math.log10(e.lr / lr)) < MERGE_DECADES), None)
        if near is not None:
            if rule not in near.rules:
                near.rules.append(rule)
        elif len(entrants) < most:
            entrants.append(Entrant(lr=lr, rules=[rule]))
    return sorted(entrants, key=lambda e: e.lr)


def successive_halving(entrants: list, budget: int, advance: Callable, protect=None) -> Race:
    """Race the entrants (Karnin et al. 2013): each round, every survivor trains r steps more
    (`advance(entrant, steps) -> pre-step losses`, continuing where it stopped), and the
    better half (by race loss) goes on. r = budget // (survivors x rounds), so every round
    costs about budget / rounds and the whole race at most `budget` steps. `protect` (the
    user's entrant) runs every round as the control the verdict compares, but wins only on
    its loss. Returns the Race; the winner has the lowest loss in the last round."""
    alive = list(entrants)
    rounds = max(1, math.ceil(math.log2(len(alive)))) if len(alive) > 1 else 1
    spent, start_loss, final_steps = 0, math.nan, 0
    for round_index in range(rounds):
        steps = max(1, budget // (len(alive) * rounds))
        for entrant in alive:
            if entrant.steps == 0 and not math.isfinite(start_loss):
                losses = list(advance(entrant, steps))
                start_loss = float(losses[0]) if losses else math.nan
                spent += _scored(entrant, losses, steps, start_loss)
            else:
                spent += _scored(entrant, list(advance(entrant, steps)), steps, start_loss)
            entrant.rounds = round_index + 1
        final_steps = max(e.steps for e in alive)
        if round_index == rounds - 1:
            break
        ranked = sorted(alive, key=lambda e: (e.loss, e.lr))
        keep = ranked[:math.ceil(len(ranked) / 2)]
        if protect is not None and protect in alive and protect not in keep:
            keep.append(protect)
        alive = [e for e in alive if e in keep and not e.diverged] or keep[:1]
    contenders = [e for e in alive if math.isfinite(e.loss)]
    winner = min(contenders, key=lambda e: (e.loss, e.lr)) if contenders else None
    return Race(entrants=entrants, winner=winner, steps=spent, start_loss=start_loss,
                final_steps=final_steps)


def _scored(entrant: Entrant, losses: list, steps: int, start_loss: float) -> int:
    """Record `losses` (the entrant's next pre-step losses) on it; returns the steps taken."""
    entrant.steps += len(losses)
    entrant.history += losses
    finite = [v for v in losses if math.isfinite(v)]
    overflowed = len(finite) < len(losses) or len(losses) < steps  # a NaN/Inf stopped it
    diverged = overflowed or (
        math.isfinite(start_loss) and bool(finite) and finite[-1] > RACE_DIVERGE * start_loss)
    if diverged or entrant.diverged:
        entrant.spiked = (entrant.spiked or not entrant.diverged) and not overflowed
        entrant.diverged, entrant.loss = True, math.inf
    else:
        tail = finite[-SCORE_WINDOW:]
        entrant.loss = float(sum(tail) / len(tail))
    return len(losses)


def raced_progress(race: Race) -> bool:
    """Whether the race's winner moved the loss enough (RACE_MIN_PROGRESS) to read an LR from."""
    return race.winner is not None and \
        race.start_loss - race.winner.loss > RACE_MIN_PROGRESS * abs(race.start_loss)


def compare(race: Race, entrant: Entrant) -> dict:
    """The entrant against the winner at the same step count n (the fewer of their steps):
    both trained n steps from the same state on the same batches. Returns {"steps": n,
    "loss", "winner_loss" (SCORE_WINDOW means before step n), "progress", "winner_progress"
    (the start loss minus those), "ratio" (winner's progress over the entrant's; inf when the
    entrant made none), "how"}. "how": "diverged", "still" (it never moved the loss, STILL,
    while the winner did), "behind" (under 1/BEHIND of the winner's progress, and BEHIND_MARGIN
    of the start loss above it), "no" (not clearly worse), or None: the winner's own progress
    by then is under RACE_MIN_PROGRESS, too little to judge any LR by."""
    winner = race.winner
    assert winner is not None  # callers compare only against a winner
    if entrant.diverged:  # judged against the winner's whole race
        n = winner.steps
        user_loss = math.inf
    else:
        n = min(entrant.steps, winner.steps)
        user_loss = entrant.loss_at(n)
    winner_loss = winner.loss_at(n)
    reference = race.reference(n)
    progress, winner_progress = reference - user_loss, reference - winner_loss
    ratio = winner_progress / progress if progress > 0 else math.inf
    result: dict[str, Any] = {"steps": n, "loss": user_loss, "winner_loss": winner_loss,
              "reference": reference, "progress": progress,
              "winner_progress": winner_progress, "ratio": ratio, "how": None}
    if not winner_progress > RACE_MIN_PROGRESS * abs(reference):
        return result
    if entrant.diverged or not math.isfinite(user_loss):
        result["how"] = "diverged"
    elif abs(progress) < STILL * abs(reference):
        result["how"] = "still"
    elif ratio > behind_of(race, entrant) \
            and user_loss - winner_loss > BEHIND_MARGIN * abs(reference):
        result["how"] = "behind"
    else:
        result["how"] = "no"
    return result


def clearly_worse(race: Race, entrant: Entrant) -> Optional[bool]:
    """Whether the entrant trains clearly worse than the winner at the same step count
    (`compare`); None when the winner's progress is too small to judge by."""
    how = compare(race, entrant)["how"]
    return None if how is None else how != "no"


def needs_confirming(race: Race, user: Entrant) -> bool:
    """Whether the user's LR looks clearly worse than the winner's, or may (the winner's
    progress is still under RACE_MIN_PROGRESS but over STILL, and the user's is under
    1/BEHIND of it: a too-high LR that kills ReLUs while the lower LR starts slowly)."""
    if user.diverged or user is race.winner:
        return False
    c = compare(race, user)
    if c["how"] is not None:
        return c["how"] != "no"
    return c["winner_progress"] > STILL * abs(c["reference"]) and (
        c["ratio"] > behind_of(race, user) or abs(c["progress"]) < STILL * abs(c["reference"]))


def behind_of(race: Race, entrant: Entrant) -> float:
    """The progress ratio over which the entrant is "behind" the winner: BEHIND for an LR
    above the winner's, BEHIND_LOW for one below."""
    assert race.winner is not None
    return BEHIND if entrant.lr > race.winner.lr else BEHIND_LOW


def confirm(race: Race, user: Entrant, advance: Callable, budget: int, full: bool = False) -> None:
    """Before a verdict: the user's LR looks clearly worse than the winner's after the race
    (`needs_confirming`). A short race favours LRs that start fast (SGD with momentum can
    climb above its start loss for its first ~20 steps and then win: simple_cnn at 0.01,
    measured; a lower LR catches up later), so both train on, doubling their steps, and are
    compared again at the same step count: until the comparison no longer looks worse, or
    CONFIRM_SHARE x budget steps are spent (`full`: all of them, for a user's LR whose loss
    spiked past RACE_DIVERGE x the start: one that comes back can still be left at chance,
    as simple_cnn at SGD 0.05 is, half the progress of a slow winner after 56 steps and a
    sixth of it after 176). Costs nothing on a model with a good LR."""
    winner = race.winner
    assert winner is not None  # race_session confirms only against a winner
    while race.confirm_steps < CONFIRM_SHARE * budget:
        now = max(winner.steps, user.steps)
        target = min(2 * now, now + int((CONFIRM_SHARE * budget - race.confirm_steps) // 2))
        for entrant in (winner, user):
            more = target - entrant.steps
            if more > 0 and not entrant.diverged:
                race.steps += _scored(entrant, list(advance(entrant, more)), more, race.start_loss)
                race.confirm_steps += more
        if user.diverged or not (full or needs_confirming(race, user)):
            break
    race.final_steps = winner.steps
    if math.isfinite(user.loss) and user.loss < winner.loss:
        race.winner = user


def bracket_of(curve: Curve, found: dict, current_lr: Optional[float] = None) -> Optional[tuple]:
    """The usable range the curve brackets: from where the smoothed loss has done
    BRACKET_START of its descent (or the valley, if lower) to the LR of its lowest point.
    The EMA lags (issue 13: ~20 steps, 1.6 decades at the default settings), so the real turn
    comes before that point, and the descent starts before the smoothed curve shows it:
    the race finds where in between training is best. A curve the rules cannot read (it
    barely descends before it diverges, as plain SGD's often does in 100 steps) still
    brackets: the BLIND_DECADES below its lowest point, or, when that point is one of the
    first STEEP_SKIP_START, the BLIND_DECADES from BLIND_ABOVE above the user's LR down (no
    higher than the last LR the curve trained at). None without two finite points."""
    points = [(lr, v) for lr, v in zip(curve.lrs, curve.losses) if math.isfinite(v)]
    if len(points) < 2:
        return None
    low_i = min(range(len(points)), key=lambda i: points[i][1])
    if found["suggestions"]["valley"] is None:
        if low_i < STEEP_SKIP_START and current_lr and current_lr > 0:
            top = min(current_lr * 10 ** BLIND_ABOVE, max(current_lr, points[-1][0]))
            return top / 10 ** BLIND_DECADES, top
        return points[low_i][0] / 10 ** BLIND_DECADES, points[low_i][0]
    peak = max(v for _, v in points[:low_i + 1])
    level = peak - BRACKET_START * (peak - points[low_i][1])
    start = next(lr for lr, v in points[:low_i + 1] if v <= level)
    return min(start, found["suggestions"]["valley"]), found["min_loss_lr"]


def race_session(session: Session, curve: Curve, found: dict, current_lr: float, settings: dict) -> Race:
    """The race on the session's model, optimizer and cached batches (those of the range test)."""
    asked = settings.get("race_steps")
    budget = int(curve.num_iter if asked is None else asked)
    named = {rule: found["suggestions"][rule] for rule in RULES}
    bracket = bracket_of(curve, found, current_lr)
    assert bracket is not None  # run() races only a curve with a bracket
    entrants = entrants_from(bracket, named, current_lr, entrants_for(budget))
    user = next((e for e in entrants if "current" in e.rules), None)
    batches = session.batches(min(curve.num_iter, MAX_BATCHES))
    on_disk, cache_dir = _cache_on_disk(session, settings)
    total = budget + int(CONFIRM_SHARE * budget)  # at most: confirm spends only when a verdict looms
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory(dir=cache_dir)) if on_disk else None
        trainer = lr_range.RaceTrainer(session.model, session.optimizer, batches,
                              lambda batch: session.loss(batch), directory=directory)
        advance_bar = stack.enter_context(session.progress("lr-find race", total))
        stack.callback(trainer.close)

        def advance(entrant, steps):
            losses = trainer.advance(entrant, steps)
            advance_bar(len(losses))
            return losses

        race = successive_halving(entrants, budget, advance, protect=user)
        spiked = False
        if user is not None and user.diverged and user.spiked and race.winner is not None:
            # Its loss passed RACE_DIVERGE x the start but stayed finite: ResNet-18 at SGD 0.1
            # (the zoo, seed 3) spikes to 5x within 12 steps and trains to ~0 by step 60.
            # Judged only after training on (`confirm`), as a slow start is.
            spiked, user.diverged = True, False
            user.loss = user.loss_at(user.steps)
        if user is not None and race.winner is not None and user is not race.winner:
            race.baseline = trainer.baseline()  # forward passes only, one per batch
            if spiked or needs_confirming(race, user):
                confirm(race, user, advance, budget, full=spiked)
        return race


# --------------------------------------------------------------------------- the check

def method_of(settings: dict) -> str:
    method = str(settings.get("method") or "race")
    method = METHOD_ALIASES.get(method, method)
    if method not in METHODS:
        raise ValueError(f"lr-find.method must be one of race, valley, steepest, min10, not {method!r}")
    return method


def run(session: Session, settings: dict) -> Outcome:
    method = method_of(settings)
    race_steps = settings.get("race_steps")
    if race_steps is not None and int(race_steps) < 0:
        raise ValueError(f"lr-find.race_steps must be 0 or more, not {race_steps!r}")
    current_lr = float(session.optimizer.param_groups[0]["lr"])
    window = range_window(settings, current_lr)
    curve = range_test(session, {**settings, "start_lr": window[0], "end_lr": window[1]})
    if curve.losses and not math.isfinite(curve.losses[0]):
        raise Skip(f"the loss is NaN/Inf at the test's first step (LR {curve.lrs[0]:.3g}), whatever "
                   "the LR: the nan check says where it comes from")
    found = suggest(curve, "valley" if method == "race" else method)
    race = None
    bracket = bracket_of(curve, found, current_lr)
    if bracket is not None and (race_steps is None or int(race_steps) > 0):
        race = race_session(session, curve, found, current_lr, settings)
    suggestions = {"race": race.winner.lr if race and race.winner else None, **found["suggestions"]}
    reason = found["reason"] if method != "race" else None
    if race is not None and race.winner is None:
        reason = (f"every LR in the race diverged (from {race.entrants[0].lr:.3g} to "
                  f"{race.entrants[-1].lr:.3g}): no usable LR (check the data, the loss and the init)")
    elif method == "race" and race is not None and race.winner is not None and not raced_progress(race):
        reason = (f"the race shows no progress: the best of {len(race.entrants)} LRs moved the loss "
                  f"from {race.start_loss:.4g} to {race.winner.loss:.4g} in {race.winner.steps} steps"
                  + (f"; and {found['reason']}" if found["reason"] else ""))
    elif method == "race" and race is None:
        reason = found["reason"] or "the race is off (race_steps 0): choose a rule with method valley, steepest or min10"
    suggested = suggestions[method] if not reason else None
    section = {
        "suggested_lr": suggested,
        "method": method,
        "why": WHY[method] if race is None or method != "race" else race_why(race),
        "suggestions": suggestions,
        "current_lr": current_lr,
        "min_loss_lr": found["min_loss_lr"],
        "bracket": list(bracket) if bracket else None,
        "candidates": [{"lr": e.lr, "loss": _json_float(e.loss), "rule": e.rule, "steps": e.steps,
                        "rounds": e.rounds, "diverged": e.diverged} for e in race.entrants] if race else [],
        "winner": race.winner.lr if race and race.winner else None,
        "race_steps": race.steps if race else 0,
        "comparison": comparison_of(race),
        "range": [float(v) for v in window],
        "range_steps": len(curve.losses),
        "stopped": curve.stop,
        "reason": reason,
        "lrs": [float(v) for v in curve.lrs],
        "losses": [_json_float(v) for v in curve.losses],
    }
    outcome = Outcome(metrics={"suggested_lr": suggested, "current_lr": current_lr,
                               "method": method, "suggestions": suggestions,
                               "min_loss_lr": found["min_loss_lr"], "steps": len(curve.losses),
                               "race_steps": section["race_steps"],
                               "descent": found.get("descent"),
                               "stopped": curve.stop})
    if reason:
        outcome.metrics["reason"] = reason
    outcome.findings += verdict(current_lr, race)
    plot_path = settings.get("plot")
    if plot_path:  # drawn from this section by render/plots.py's write_plots
        section["plot"] = outcome.metrics["plot"] = str(plot_path)
    outcome.sections["lr_find"] = section
    return outcome


def comparison_of(race: Optional[Race]) -> Optional[dict]:
    """The user's LR against the winner at the same steps (`compare`), for the JSON section:
    why there is a verdict, or why not. None without both."""
    if race is None or race.winner is None:
        return None
    user = next((e for e in race.entrants if "current" in e.rules), None)
    if user is None or user is race.winner:
        return None
    c = compare(race, user)
    return {k: (_json_float(v) if isinstance(v, float) else v) for k, v in c.items()}


def range_window(settings: dict, current_lr: float) -> tuple:
    """(start_lr, end_lr) of the range test. The test's LR grows exponentially, so its
    resolution is num_iter points over the window's decades: the default 100 points over
    1e-7..10 give 12.5 a decade. When num_iter is cut below the default (the time budget,
    engine/budget.py, may cut it to MIN_LR_POINTS = 20) and the window is the default one, the
    window narrows around the user's LR to keep about that resolution: WINDOW_DECADES scaled by
    num_iter / 100, at least MIN_WINDOW_DECADES, a third of it below the user's LR (the race
    brackets from the curve, and the LRs worth racing lie mostly above a too-low user LR and
    at most ~2 decades below a too-high one), shifted to stay inside the default window.
    A window the user set is kept as it is."""
    start, end = float(settings["start_lr"]), float(settings["end_lr"])
    full = DEFAULT_NUM_ITER
    num_iter = int(settings["num_iter"])
    if num_iter >= full or (start, end) != (DEFAULTS["start_lr"], DEFAULTS["end_lr"]) or not current_lr > 0:
        return start, end
    decades = math.log10(end / start)
    span = min(decades, max(MIN_WINDOW_DECADES, decades * num_iter / full))
    low = math.log10(current_lr) - span / 3
    low = min(max(low, math.log10(start)), math.log10(end) - span)
    return 10 ** low, 10 ** (low + span)


def race_why(race: Race) -> str:
    winner = race.winner
    if winner is None:  # every LR in the race diverged: run() says so, this only names the method
        return WHY["race"]
    return (f"the lowest loss in the race: {winner.loss:.4g} (from {race.start_loss:.4g}) after "
            f"{winner.steps} steps, against {len(race.entrants) - 1} other LRs trained from the same "
            f"state on the same batches ({race.steps} steps in all, successive halving)")


def verdict(current_lr: float, race: Optional[Race]) -> list:
    """lr-too-high / lr-too-low from the race: the user's LR, trained alongside the winner from
    the same state on the same batches, diverged, never moved the loss, or made under
    1/BEHIND of the winner's progress over the same steps (`compare`). An LR of 0 (or below)
    moves nothing: lr-too-low without a race."""
    winner = race.winner if race else None
    if current_lr <= 0:
        better = f"; the race's winner is {winner.lr:.3g}" if winner else ""
        return [make_finding(
            "lr-too-low", NAME, None,
            f"The optimizer's LR is {current_lr:.3g}: no optimizer step moves the weights{better}.",
            {"current_lr": current_lr, "suggested_lr": winner.lr if winner else None})]
    if race is None or winner is None:
        return []
    user = next((e for e in race.entrants if "current" in e.rules), None)
    if user is None or user is winner:
        return []
    start = race.start_loss
    c = compare(race, user)
    if c["how"] in (None, "no"):
        return []  # as good, or the race shows too little descent to judge any LR by
    n = c["steps"]
    evidence = {"current_lr": current_lr, "suggested_lr": winner.lr, "race_loss": _json_float(c["loss"]),
                "winner_loss": c["winner_loss"], "start_loss": start, "steps": n,
                "progress_ratio": _json_float(c["ratio"]), "behind": behind_of(race, user), "how": c["how"],
                "user_steps": user.steps, "winner_steps": winner.steps, "race_steps": race.steps,
                "confirm_steps": race.confirm_steps, "diverged": user.diverged}
    if user.diverged:
        how = (f"diverged within {user.steps} steps (the loss became NaN/Inf or passed "
               f"{RACE_DIVERGE:g}x its start, {start:.4g})")
        reached = f"{winner.loss:.4g} after {winner.steps} steps"
    elif c["how"] == "still":
        how = (f"never moved the loss in {n} steps ({c['loss']:.4g}, against {c['reference']:.4g} "
               f"for the initial model on the same batches)")
        reached = f"{c['winner_loss']:.4g} after the same steps"
    else:
        how = (f"reached loss {c['loss']:.4g} in {n} steps (the initial model: {c['reference']:.4g} "
               f"on the same batches)")
        gained = (f"{c['ratio']:.1f}x the progress" if math.isfinite(c["ratio"]) else
                  "while the user's LR made none")
        reached = (f"{c['winner_loss']:.4g} after the same steps, {gained} "
                   f"(clearly worse: over {behind_of(race, user):g}x the progress)")
    code = "lr-too-high" if current_lr > winner.lr else "lr-too-low"
    return [make_finding(
        code, NAME, None,
        f"In the race from the same initial state, the optimizer's LR {current_lr:.3g} {how}, while "
        f"LR {winner.lr:.3g} was at {reached}.", evidence)]


def _json_float(v: float):
    return v if math.isfinite(v) else None
