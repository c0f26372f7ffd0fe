"""Judging a watched run: the per-step records to findings (thresholds live here).

The live probe (`nndoctor.probes.live`) measures and fills a `History`; this module
reads it and does no tensor work. `on_step` runs at every step (cheap: a few comparisons, a median over a
short window every few steps) so that a finding carries the step it appeared at
and `fail_on` can stop the loop there; `finish` adds what only the whole run can
say (the loss trend, overfitting, a parameter that never got a gradient).
"""

from __future__ import annotations

import math
import statistics
from typing import Optional

from ..checks.dead import DEFAULTS as DEAD_DEFAULTS
from ..checks.dead import MIN_UNITS
from ..checks.fit import OVERFIT_GIVEN_BACK, given_back_share
from ..checks.grads import VANISHING_RATIO, compared_layers
from ..checks.nan import describe_located, loss_made_nan, nonfinite_fix
from ..probes.live import History, NonFiniteEvent
from ..report.findings import Finding, make_finding

__all__ = ["History", "Judge", "NonFiniteEvent", "describe_nonfinite"]

CHECK = "watch"

# --- loss-spike. A spike is a loss above BOTH bars below; a finding needs SPIKE_COUNT
# spikes within SPIKE_SPAN steps ("stays or recurs", SPEC §3), against a baseline of the
# median of the last SPIKE_WINDOW losses, never before SPIKE_WINDOW steps have been seen
# (issue 16 item 6: no baseline, no spike).
SPIKE_WINDOW = 50
# 1. Far outside the baseline's own noise: more than 10 robust standard deviations
# (1.4826 x MAD) above the median. Mini-batch losses of the healthy sample scripts stay
# within ~4 of them; 10 leaves room for heavy-tailed batches.
SPIKE_MADS = 10.0
MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution is 0.6745 sigma
# 2. A jump that undoes at least half of the progress made since the first steps
# (median of the first SPIKE_START losses minus the baseline): a hard batch near
# convergence (0.05 -> 0.3 on a loss that started at 2.3) is noise, not a spike.
SPIKE_PROGRESS_SHARE = 0.5
SPIKE_START = 10
SPIKE_COUNT = 3
SPIKE_REFRESH = 10  # the baseline is recomputed every 10 steps: a median per step costs more than the step
SPIKE_SPAN = 20

# --- amp-skipped-steps. The scaler starts at 2**16 and halves on each overflowing step
# until the gradients fit: with fp16 that takes a handful of skips at the start (about
# log2(65536 / usable scale)), then one skip per growth_interval (2000) steps when it tries
# to grow. Those are normal. Steps before the first applied step are calibration; after it,
# a finding needs more than AMP_SKIP_SHARE of the last AMP_WINDOW steps skipped (the
# growth probe's 1 in 2000 is 0.05%).
AMP_WINDOW = 50
AMP_SKIP_SHARE = 0.25

# --- lr-collapsed. "~0": every group's LR below LR_ZERO_RATIO of the highest LR the run
# has used. The lowest phase of the common step schedules is 1e-3 of the peak (ResNet:
# 0.1 -> 1e-4 over 3 decays, He et al. 2016); 1e-5 is two decades below that. A cosine
# schedule ending at its planned end spends the last ~0.2% of its length below 1e-5 of
# the peak; a finding needs LR ~0 for LR_ZERO_MIN_STEPS steps and for at least
# LR_ZERO_SHARE of the steps before it, so a schedule only finishing is never reported.
LR_ZERO_RATIO = 1e-5
LR_ZERO_MIN_STEPS = 100
LR_ZERO_SHARE = 0.25

# --- exploding-gradient: the same bar as `check`'s grads (checks/grads.py, measured there).
EXPLODING_NORM = 1e3

# --- loss-not-decreasing: the median of the last LOSS_TREND_SHARE of the losses is not at
# least MIN_RELATIVE_DROP below the median of the first share (the bar `overfit` uses on a
# short run, checks/overfit.py). Judged only on runs of LOSS_TREND_MIN_STEPS steps or more:
# a short watch (--max-steps 50 on a large model) may simply not have got there yet. Nor on a
# run where another optimizer steps on a loss of its own on OTHER_OBJECTIVE_SHARE of the steps
# or more (a GAN, actor-critic): the primary's loss is one player's, which need not fall (a
# healthy GAN's discriminator loss hovers near its equilibrium). Nor on a run that resumed
# (the optimizer had trained state at its first step: a checkpoint loaded, or the watch began
# mid-run): its loss starts near where it had got to and falls by a few percent in 300 steps,
# healthy (measured: an MLP resumed after 3,000 AdamW steps, 300 more watched: 3% down).
LOSS_TREND_SHARE = 0.1
MIN_RELATIVE_DROP = 0.1
LOSS_TREND_MIN_STEPS = 200
OTHER_OBJECTIVE_SHARE = 0.5

# --- overfitting: the last logged validation loss more than OVERFIT_MARGIN above the lowest,
# while the training loss went down over the same steps, and the rise gives back at least
# OVERFIT_GIVEN_BACK of what validation had gained since its first logged loss (the bars of
# `fit`, checks/fit.py). Measured on the zoo (bench/WATCH_ZOO.md, 300 steps): DistilBERT's val
# loss drifts 0.028 -> 0.050 after falling from 0.552, 4% of its gain given back, quiet; the LSTM
# classifier's climbs 0.091 -> 0.150 over 6 epochs while its training loss reaches 0.0016,
# 10.3% given back: overfitting, found.
OVERFIT_MARGIN = 0.10
MIN_VAL_POINTS = 3

# --- no-gradient: a parameter in the optimizer with no gradient (None or all zeros) on
# every one of at least NO_GRAD_MIN_SAMPLES sampled steps.
NO_GRAD_MIN_SAMPLES = 3

# --- vanishing-gradient: `check`'s bar (checks/grads.VANISHING_RATIO, measured there): the RMS
# gradient of the first weight layer over the last hidden one's (the output layer left out,
# as there), the median over the last VANISH_WINDOW sampled steps, once VANISH_MIN_SAMPLES
# of them are in: the median keeps one odd batch from deciding, the window lets a gradient
# that vanishes later in the run (units saturating) show through an early healthy phase.
VANISH_WINDOW = 5
VANISH_MIN_SAMPLES = 3

# --- dead-neurons: `check`'s bars (checks/dead.DEFAULTS["threshold"], dead.MIN_UNITS): more than
# 50% of a rectifier's judged units dead. A unit is dead once it has been silent (never > 0)
# on its last probes/activations.MIN_OBSERVATIONS (299) finite observations or more, counted
# over the sampled steps' activation scans: the observations `check` needs before calling a
# unit that fires 1% of the time dead (95% confidence), so a rarely firing unit is not.
DEAD_THRESHOLD = DEAD_DEFAULTS["threshold"]


class Judge:
    """Turns a History into findings, once per code and place."""

    def __init__(self, history: History):
        self.h = history
        self.findings: list = []
        self._seen: set = set()
        self._first_losses: Optional[float] = None
        self._lr_peak = 0.0
        self._lr_zero_since: Optional[int] = None
        self._lr_alive_steps = 0
        self._spikes: list = []
        self._baseline: Optional[tuple] = None
        self._first_taken: Optional[int] = None
        self._ratios: list = []  # (sampled step, first/last hidden RMS gradient, first, last)

    def _add(self, finding: Finding) -> Optional[Finding]:
        key = (finding.code, finding.where)
        if key in self._seen:
            return None
        self._seen.add(key)
        self.findings.append(finding)
        return finding

    def on_step(self, step: int) -> list:
        """Findings that appear at `step` (the step just recorded)."""
        new = [self._spike(step), self._amp(step), self._lr(step), self._exploding(step),
               self._clip(step), self._eval_mode(step), self._nonfinite(step), self._vanishing(step)]
        new += self._dead(step)
        if step == 1:  # when every optimizer of the loop has stepped (probes/live._find_not_in_optimizer)
            new += self._not_in_optimizer()
        return [f for f in new if f is not None]

    def on_steps(self, first: int, last: int) -> list:
        """The findings of steps `first`..`last` (recorded since the last call), the same and in
        the same order as `on_step` on each of them, with the judges that cannot fire in the range
        (no skipped step, no sampled step, every LR alive...) screened out once for the range:
        on a healthy run only the spike judge runs per step."""
        h = self.h
        stop = last + 1
        spike = stop > SPIKE_WINDOW and ("loss-spike", None) not in self._seen
        amp = not (self._first_taken is not None and True not in h.skipped[first:stop])
        lr = ("lr-collapsed", None) not in self._seen and not self._lrs_alive(first, stop)
        exploding = any(n is not None and n > EXPLODING_NORM for n in h.grad_norms[first:stop])
        clip = bool(h.clip_scaled) and first <= h.clip_scaled[0] <= last
        eval_mode = bool(h.eval_modules)
        nonfinite = h.nonfinite is not None and first <= h.nonfinite.step <= last
        if not (amp or lr or exploding or clip or eval_mode or nonfinite or first == 0) and not any(
                step in h.layer_rms or step in h.unit_scans for step in range(first, stop)):
            return self._spike_range(first, stop) if spike else []  # a healthy run's common range
        new: list = []
        for step in range(first, stop):
            found = [self._spike(step) if spike else None, self._amp(step) if amp else None,
                     self._lr(step) if lr else None, self._exploding(step) if exploding else None,
                     self._clip(step) if clip else None, self._eval_mode(step) if eval_mode else None,
                     self._nonfinite(step) if nonfinite else None,
                     self._vanishing(step) if step in h.layer_rms else None]
            if step in h.unit_scans:
                found += self._dead(step)
            if step == 1:
                found += self._not_in_optimizer()
            new += [f for f in found if f is not None]
        return new

    def _lrs_alive(self, first: int, stop: int) -> bool:
        """Every LR of the range is far above LR_ZERO_RATIO of the peak: `_lr` would only raise
        the peak and mark them alive, which this does for the whole range at once."""
        lrs = self.h.lrs[first:stop]
        if not lrs or None in lrs:
            return False
        peak = max(self._lr_peak, max(lrs))
        if not (peak <= 0 or min(lrs) > LR_ZERO_RATIO * peak):
            return False
        self._lr_peak, self._lr_zero_since, self._lr_alive_steps = peak, None, stop
        return True

    def _spike_range(self, first: int, stop: int) -> list:
        """`_spike` over steps first..stop-1, called only where it can do anything: where it
        would refresh the baseline, or on a loss above the current bar (a NaN is above no bar)."""
        losses, found = self.h.losses, []
        for step in range(max(first, SPIKE_WINDOW), stop):
            if self._baseline is None or step % SPIKE_REFRESH == 0 or losses[step] > self._baseline[1]:
                finding = self._spike(step)
                if finding is not None:
                    found.append(finding)
        return found

    # ---------------------------------------------------------------- per step

    def _spike(self, step: int) -> Optional[Finding]:
        losses = self.h.losses
        loss = losses[step]
        if step < SPIKE_WINDOW or not math.isfinite(loss) or ("loss-spike", None) in self._seen:
            return None
        if self._baseline is None or step % SPIKE_REFRESH == 0:
            self._baseline = self._spike_bar(step)
        median, bar = self._baseline
        if not loss > bar:
            return None
        self._spikes = [s for s in self._spikes if s[0] > step - SPIKE_SPAN] + [(step, loss, median)]
        if len(self._spikes) < SPIKE_COUNT:
            return None
        first, peak = self._spikes[0], max(s[1] for s in self._spikes)
        # a median of exactly 0 (a memorised batch's loss underflows) has no ratio to show
        times = f"{first[1] / first[2]:.1f}x; " if first[2] > 0 else ""
        return self._add(make_finding(
            "loss-spike", CHECK, None,
            f"At step {first[0] + 1} the loss jumped to {first[1]:.4g} from a running median of "
            f"{first[2]:.4g} ({times}the run started at {self._first_losses:.4g}) "
            f"and spiked {len(self._spikes)} times within {SPIKE_SPAN} steps (peak {peak:.4g}).",
            {"step": first[0], "loss": first[1], "median": first[2], "peak": peak,
             "spikes": [s[0] for s in self._spikes], "initial_median": self._first_losses}))

    def _spike_bar(self, step: int) -> tuple:
        """(median, the loss above which a step is a spike), from the last SPIKE_WINDOW losses."""
        if self._first_losses is None:
            first = [v for v in self.h.losses[:SPIKE_START] if math.isfinite(v)]
            self._first_losses = statistics.median(first) if first else math.nan
        window = [v for v in self.h.losses[step - SPIKE_WINDOW:step] if math.isfinite(v)]
        if len(window) < SPIKE_WINDOW // 2:
            return math.nan, math.inf
        median = statistics.median(window)
        sigma = MAD_TO_SIGMA * statistics.median(abs(v - median) for v in window)
        progress = self._first_losses - median
        if not progress > 0:
            return median, math.inf
        return median, median + max(SPIKE_MADS * sigma, SPIKE_PROGRESS_SHARE * progress)

    def _amp(self, step: int) -> Optional[Finding]:
        skipped = self.h.skipped
        if not skipped[step]:
            if self._first_taken is None:
                self._first_taken = step
            return None
        if self._first_taken is None or ("amp-skipped-steps", None) in self._seen:
            return None  # calibration: the scale has not yet fitted once
        start = max(self._first_taken + 1, step - AMP_WINDOW + 1)
        window = skipped[start:step + 1]
        if len(window) < AMP_WINDOW or sum(window) <= AMP_SKIP_SHARE * len(window):
            return None
        first = start + window.index(True)
        count = sum(window)
        total = sum(skipped[self._first_taken:step + 1])
        return self._add(make_finding(
            "amp-skipped-steps", CHECK, None,
            f"From step {first + 1} the GradScaler skipped {count} of the last {len(window)} steps "
            f"({100.0 * count / len(window):.0f}%) for inf/NaN gradients, after its scale had "
            f"calibrated (first applied step: {self._first_taken + 1}); {total} skipped in all.",
            {"step": first, "skipped_in_window": count, "window": len(window),
             "skipped_after_calibration": total, "calibration_steps": self._first_taken}))

    def _lr(self, step: int) -> Optional[Finding]:
        lr = self.h.lrs[step]
        if lr is None or ("lr-collapsed", None) in self._seen:
            return None
        self._lr_peak = max(self._lr_peak, lr)
        if self._lr_peak <= 0 or lr > LR_ZERO_RATIO * self._lr_peak:
            self._lr_zero_since = None
            self._lr_alive_steps = step + 1
            return None
        if self._lr_zero_since is None:
            self._lr_zero_since = step
        length = step - self._lr_zero_since + 1
        if length < LR_ZERO_MIN_STEPS or length < LR_ZERO_SHARE * self._lr_alive_steps:
            return None
        since = self._lr_zero_since
        return self._add(make_finding(
            "lr-collapsed", CHECK, None,
            f"From step {since + 1} every group's LR is below {LR_ZERO_RATIO:g} of its peak "
            f"({self._lr_peak:.3g}): {lr:.3g} at step {step + 1}, {length} steps with no "
            "effective update so far.",
            {"step": since, "lr": lr, "peak_lr": self._lr_peak, "steps_at_zero": length}))

    def _exploding(self, step: int) -> Optional[Finding]:
        norm = self.h.grad_norms[step]
        if norm is None or not math.isfinite(norm) or norm <= EXPLODING_NORM:
            return None
        return self._add(make_finding(
            "exploding-gradient", CHECK, None,
            f"At step {step + 1} the total gradient norm is {norm:.4g}, above {EXPLODING_NORM:g}.",
            {"step": step, "grad_norm": norm, "threshold": EXPLODING_NORM}))

    def _clip(self, step: int) -> Optional[Finding]:
        if not self.h.clip_scaled or self.h.clip_scaled[0] != step:
            return None
        return self._add(make_finding(
            "clip-before-unscale", CHECK, None,
            f"At step {step + 1} gradients were clipped while still multiplied by the GradScaler's "
            f"scale ({self.h.clip_scale:g}; no scaler.unscale_(optimizer) before the clip): max_norm is "
            f"in effect divided by {self.h.clip_scale:g}.",
            {"step": step, "scale": self.h.clip_scale, "occurrences": len(self.h.clip_scaled)}))

    def _eval_mode(self, step: int) -> Optional[Finding]:
        modules = self.h.eval_modules.get(step)
        if not modules or ("eval-mode-in-training", None) in self._seen:
            return None
        layers = [m for m in modules if ":" not in m]
        functional = [m.rsplit(":", 1) for m in modules if ":" in m]  # path:op, see LiveProbe._eval_mode
        told = []
        if layers:
            told.append(f"{_listed([f'`{m}`' for m in layers])} (dropout or BatchNorm, which compute "
                        f"differently in eval mode) trained earlier and {'is' if len(layers) == 1 else 'are'} "
                        "now in eval mode")
        if functional:
            calls = [f"F.{op} in " + (f"`{path}`" if path else "the model's own forward") for path, op in functional]
            told.append(f"{_listed(calls)} {'is' if len(calls) == 1 else 'are'} called with "
                        "training=self.training (or a rate that is 0 in eval mode) and so "
                        f"{'is' if len(calls) == 1 else 'are'} off")
        return self._add(make_finding(
            "eval-mode-in-training", CHECK, None,
            f"At step {step + 1} the optimizer stepped while the model was in eval mode: {'; '.join(told)}.",
            {"step": step, "modules": modules}))

    def _nonfinite(self, step: int) -> Optional[Finding]:
        event = self.h.nonfinite
        if event is None or event.step != step:
            return None
        return self._add(make_finding(
            "non-finite", CHECK, event.where, describe_nonfinite(event),
            {"step": step, "kind": event.kind, "op": event.op, "value": event.value, "loss": event.loss,
             "grad_norm": event.grad_norm, "scope": event.scope, "parameters": event.params,
             "reproduced": event.reproduced, "input": event.input_name, "input_nonfinite": event.input_count,
             "loss_op": event.loss_op, "rank": event.rank, "world_size": event.world_size,
             "last_finite_losses": [v for v in self.h.losses[:step] if math.isfinite(v)][-5:]},
            source=event.source, fix=nonfinite_fix(event)))

    def _vanishing(self, step: int) -> Optional[Finding]:
        layers = self.h.layer_rms.get(step)
        if not layers:
            return None
        hidden = layers[:-1]  # the output layer aside (see checks/grads.VANISHING_RATIO)
        if len(hidden) < 2:
            return None
        # check's pair: the first layer that is not an attention query/key projection (small
        # under near-uniform attention: a tiny BART's layer-0 q_proj reads 1.5e-5 of its last
        # FFN), by order alone (the positions per sample are not recorded live)
        (first, first_rms), (last, last_rms) = compared_layers(hidden, {})
        if not last_rms > 0:
            return None
        self._ratios.append((step, first_rms / last_rms, first, last))
        window = [r for r in self._ratios[-VANISH_WINDOW:] if r[2] == first and r[3] == last]
        if len(window) < VANISH_MIN_SAMPLES or ("vanishing-gradient", first) in self._seen:
            return None
        median = statistics.median(r[1] for r in window)
        if median >= VANISHING_RATIO:
            return None
        since = next(r[0] for r in window if r[1] < VANISHING_RATIO)
        orders = f"{-math.log10(median):.0f} orders of magnitude" if median > 0 else "infinitely"
        return self._add(make_finding(
            "vanishing-gradient", CHECK, first,
            f"From step {since + 1} the first layer `{first}` gets gradients {orders} smaller than the "
            f"last hidden layer `{last}` (RMS gradient ratio {median:.1e}, the median over {len(window)} "
            f"sampled steps up to step {step + 1}; threshold {VANISHING_RATIO:g}).",
            {"step": since, "ratio": median, "ratios": [r[1] for r in window],
             "sampled_steps": [r[0] for r in window], "threshold": VANISHING_RATIO,
             "first_layer": first, "last_layer": last, "first_rms": first_rms, "last_rms": last_rms}))

    def _dead(self, step: int) -> list:
        found = []
        for scan in self.h.unit_scans.get(step, ()):
            if not scan.judged or ("dead-neurons", scan.where) in self._seen:
                continue
            needed = _dead_needed(scan.judged)
            if scan.dead < needed:
                continue
            died_by = scan.died_steps[needed - 1]  # by then more than the threshold were silent
            after = scan.died_after_steps[needed - 1] if scan.died_after_steps else -1
            pct = 100.0 * scan.dead / scan.judged
            of = f"{scan.judged} judged units" if scan.judged < scan.units else f"{scan.units} units"
            name = f"{scan.kind} `{scan.where}`" + (f" (after `{scan.after}`)" if ":" in scan.where
                                                     and scan.after else "")
            window = f"after step {after + 1} and by step {died_by + 1}" if after >= 0 else f"by step {died_by + 1}"
            died = (f" {scan.fired_before} of them fired on an earlier sampled step: they died during "
                    f"training, {window}." if scan.fired_before else "")
            found.append(self._add(make_finding(
                "dead-neurons", CHECK, scan.where,
                f"At step {step + 1} {scan.dead} of the {of} ({pct:.1f}%) of {name} have not fired on "
                f"their last {scan.observations} or more observations each (sampled every "
                f"{self.h.every} steps; threshold {DEAD_THRESHOLD:g}%).{died}",
                {"step": died_by, "died_by_step": died_by, "died_after_step": after if after >= 0 else None,
                 "judged_at_step": step, "scan_period": scan.period,
                 "dead_pct": round(pct, 2), "dead_units": scan.dead, "judged_units": scan.judged,
                 "total_units": scan.units, "observations_per_unit": scan.observations,
                 "min_observations": self.h.min_observations, "died_during_training": scan.fired_before,
                 "activation": scan.kind, "after": scan.after, "threshold": DEAD_THRESHOLD})))
        return [f for f in found if f is not None]

    def _not_in_optimizer(self) -> list:
        return [self._add(make_finding(
            "not-in-optimizer", CHECK, name,
            f"The trainable parameter `{name}` is in no parameter group of the optimizer: it gets "
            "gradients but is never updated.", {"step": 0}))
            for name in self.h.not_in_optimizer]

    # ---------------------------------------------------------------- at the end

    def finish(self) -> list:
        new = [self._loss_trend(), self._overfitting()] + self._no_gradient()
        return [f for f in new if f is not None]

    @property
    def adversarial(self) -> bool:
        return self.h.steps > 0 and self.h.other_objective_steps >= OTHER_OBJECTIVE_SHARE * self.h.steps

    def _loss_trend(self) -> Optional[Finding]:
        losses = [v for v in self.h.losses if math.isfinite(v)]
        if len(losses) < LOSS_TREND_MIN_STEPS or self.h.nonfinite is not None or self.adversarial \
                or self.h.resumed:
            return None
        span = max(1, int(LOSS_TREND_SHARE * len(losses)))
        first, last = statistics.median(losses[:span]), statistics.median(losses[-span:])
        if last < first - MIN_RELATIVE_DROP * abs(first):
            return None
        return self._add(make_finding(
            "loss-not-decreasing", CHECK, None,
            f"Over {len(losses)} steps the loss went from a median of {first:.4g} (first {span} "
            f"steps) to {last:.4g} (last {span}): less than a {MIN_RELATIVE_DROP:.0%} drop.",
            {"step": len(self.h.losses) - 1, "first_median": first, "last_median": last, "span": span}))

    def _overfitting(self) -> Optional[Finding]:
        vals = self.h.val_losses
        if len(vals) < MIN_VAL_POINTS:
            return None
        best = min(range(len(vals)), key=lambda i: vals[i][1])
        (best_step, best_val), (last_step, last_val) = vals[best], vals[-1]
        if best == len(vals) - 1 or last_val <= best_val * (1 + OVERFIT_MARGIN):
            return None
        if given_back_share(vals[0][1], best_val, last_val) < OVERFIT_GIVEN_BACK:
            return None  # a drift near the floor, not a turn (fit's bar; the zoo's DistilBERT: 4%)
        train_then, train_now = self._train_near(best_step), self._train_near(last_step)
        if train_then is None or train_now is None or train_now >= train_then:
            return None
        return self._add(make_finding(
            "overfitting", CHECK, None,
            f"The validation loss rose from {best_val:.4g} (step {best_step + 1}) to {last_val:.4g} "
            f"(step {last_step + 1}) while the training loss fell from {train_then:.4g} to {train_now:.4g}.",
            {"step": best_step, "best_val_loss": best_val, "last_val_loss": last_val,
             "train_loss_at_best": train_then, "train_loss_at_last": train_now,
             "val_losses": [v for _, v in vals]}))

    def _train_near(self, step: int) -> Optional[float]:
        window = [v for v in self.h.losses[max(0, step - SPIKE_WINDOW + 1):step + 1] if math.isfinite(v)]
        return statistics.median(window) if window else None

    def _no_gradient(self) -> list:
        if self.h.samples < NO_GRAD_MIN_SAMPLES:
            return []
        return [self._add(make_finding(
            "no-gradient", CHECK, name,
            f"The parameter `{name}` got no gradient (None or all zeros) on any of the "
            f"{self.h.samples} sampled steps.", {"step": 0, "sampled_steps": self.h.samples}))
            for name, count in self.h.no_grad_samples.items()
            if count >= self.h.samples and name not in self.h.grad_seen]


def _listed(items: list, shown: int = 5) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _dead_needed(judged: int) -> int:
    """The fewest dead units among `judged` that make a finding: more than DEAD_THRESHOLD
    percent of them, or all of a layer below checks/dead.MIN_UNITS units (dead._over's rule)."""
    if judged < MIN_UNITS:
        return judged
    return math.floor(DEAD_THRESHOLD * judged / 100) + 1


def describe_nonfinite(event: NonFiniteEvent) -> str:
    """One sentence: when, what, where, which op (`check`'s wording, nan.describe_located)."""
    when = f"At step {event.step + 1}"
    loss = "unknown" if event.loss is None else f"{event.loss:.4g}"
    if event.kind == "input" and event.input_name:
        return (f"{when} the batch's inputs hold {event.value} values (`{event.input_name}`: "
                f"{event.input_count:,} of {event.input_size:,}), so the loss is {loss}.")
    if event.kind == "all-reduce":
        checked = (f"the inputs, the loss ({loss}) and the model's forward and backward, re-run, are finite"
                   if event.reproduced else f"the inputs and the loss ({loss}) are finite (a sharded model "
                   "is not re-run)")
        return (f"{when} the gradients are non-finite while on this rank ({event.rank} of "
                f"{event.world_size}) {checked}: they came through the ranks' "
                "gradient reduction from another rank's step (or from the loss's own backward: sqrt or "
                "norm at 0); the rank whose step went non-finite says where.")
    told = describe_located(event, when)
    if told is not None and event.kind == "parameter" and event.world_size:
        told += (f" That update's gradients were all-reduced over the {event.world_size} ranks: another "
                 "rank's non-finite step may have made them (that rank's report says where).")
    if told is None and event.kind == "loss":
        op = f" (its last op `{event.loss_op}`)" if event.loss_op else ""
        told = f"{when} the loss is {loss} while the model's output is finite: the loss function{op} made it."
    if told is None or event.scope != "loss":
        return told if told is not None else _unplaced(event, when, loss)
    if event.ignore_index is not None and loss_made_nan(event):
        told += (f" If every target of the batch is ignore_index ({event.ignore_index}), the mean is over "
                 "no targets: 0/0.")
    if event.grad_norm == 0:
        told += " The gradients are all zero: nothing reached the model."
    elif event.grad_norm is not None and math.isfinite(event.grad_norm):
        told += f" The gradients are finite (norm {event.grad_norm:.4g})."
    return told


def _unplaced(event: NonFiniteEvent, when: str, loss: str) -> str:
    norm = "unknown" if event.grad_norm is None else f"{event.grad_norm:.4g}"
    return (f"{when} the loss ({loss}) or the gradient norm ({norm}) went non-finite, and a re-run of "
            "the step could not place it (a nondeterministic op, or the model's inputs were not seen).")
