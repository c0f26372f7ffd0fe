"""dead: units that never fire, and sigmoid/tanh units stuck at their asymptotes (SPEC §3).

Reads the shared activation scan (`nndoctor.probes.activations`): the model at its initial
weights, in train mode, on the first few training batches, with activation
modules and functional activations (`F.relu` inside a `forward`) both seen.

* `dead-neurons`: a rectifier (ReLU, GELU, SiLU, ...) whose units
  never output > 0 over the scan, for more than `threshold` percent of them.
  A dead ReLU passes no gradient, so it never comes back.
* `saturated-activations`: a sigmoid/tanh whose units sit within
  `scan.SATURATION_MARGIN` of an asymptote on most of their inputs, for more
  than `saturated_threshold` percent of them. Their gradient is ≈ 0.

Twice: at initialisation, and on the weights the shared training run
(`instrument.shared_run`, the run `overfit`, `grads` and `nan` read) ends with, so
units that die during training (a high LR knocking the biases negative) are
reported too, with the step from which the layer feeding them got no gradient.
The second scan needs that run done already (`nan` and `grads` run before
`dead`): `--checks dead` alone does not train.

A unit is judged only on enough finite observations (`scan.MIN_OBSERVATIONS`):
NaN/Inf outputs are not "never fired" (the data or `non-finite` findings say
why they are there), and a unit seen too few times is left inconclusive.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from ..engine.session import Session
from ..probes.activations import RECTIFIER, SATURATION_MARGIN, SIGMOID, ActivationStats, ScanResult, activation_scan
from ..report.findings import make_finding
from . import Outcome

NAME = "dead"
DEFAULTS = {
    "threshold": 50,  # SPEC §7: more than 50% of a layer's units never firing is a warning
    "saturated_threshold": 50,  # the same bar for sigmoid/tanh: most units saturated
}
MIN_UNITS = 8  # below 8 units one unit is > 12% of the layer, so a percentage of a tiny layer says
#                little; such a layer is reported only when every unit is dead (then no signal
#                and no gradient crosses it at all, whatever its size).
STUCK_RATE = 0.5  # a sigmoid/tanh unit is saturated when it is near an asymptote on most (> 50%)
#                   of its inputs. Unit pre-activations ~ N(0, σ²) need σ > ~4 for that with tanh
#                   (|z| > 2.65 for |tanh z| > 0.99); LeCun et al. (1998) "Efficient BackProp" §4.6
#                   and Glorot & Bengio (2010) aim init at σ ≈ 1, where only ~1% are.


def run(session: Session, settings: dict) -> Outcome:
    dead_bar = _percent(settings.get("threshold"), "threshold")
    saturated_bar = _percent(settings.get("saturated_threshold"), "saturated_threshold")
    scan = activation_scan(session)
    rectifiers = [s for s in scan.layers if s.family == RECTIFIER]
    outcome = Outcome(metrics={
        "activations_scanned": len(scan.layers),
        "batches_scanned": scan.batches,
        "samples_scanned": scan.samples,
        "min_observations": scan.min_observations,
        # None: no unit of the activation had enough finite observations to be judged
        "dead_pct": {s.where: round(s.dead_pct, 2) if s.judged_units else None for s in rectifiers},
        "saturated_pct": {s.where: round(100.0 * s.saturated_units(STUCK_RATE) / s.units, 2)
                          for s in scan.layers if s.family != RECTIFIER},
    })
    inconclusive = {s.where: _inconclusive(s) for s in rectifiers if s.judged_units < s.units}
    if inconclusive:
        outcome.metrics["inconclusive"] = inconclusive
    reported = set()
    for stats in scan.layers:
        if stats.family == RECTIFIER:
            finding = dead_finding(stats, scan, dead_bar)
        else:
            finding = saturated_finding(stats, scan, saturated_bar)
        if finding is not None:
            outcome.findings.append(finding)
            reported.add(stats.where)
    outcome.findings += died_findings(session, scan, reported, dead_bar, outcome.metrics)
    return outcome


def _inconclusive(stats: ActivationStats) -> str:
    seen = int(stats.observations.min())
    why = f"{seen} finite observations per unit, {stats.min_observations} needed for a verdict"
    if stats.non_finite_units:
        why += f"; {stats.non_finite_units} of its {stats.units} units output NaN/Inf"
    return why


def dead_finding(stats: ActivationStats, scan: ScanResult, threshold: float, *,
                 when: str = "at initialisation", extra: Optional[dict] = None):
    dead, judged = stats.dead_units, stats.judged_units
    if not judged or not _over(dead, judged, threshold):
        return None
    pct = stats.dead_pct
    observed = int(stats.observations[stats.judged].min())
    left_out = stats.units - judged
    note = ""
    if left_out:
        note = (f" {left_out} units with too few finite observations are not judged"
                + (f" ({stats.non_finite_units} output NaN/Inf)." if stats.non_finite_units else "."))
    evidence = {"dead_pct": round(pct, 2), "dead_units": dead, "judged_units": judged,
                "total_units": stats.units, "observations_per_unit": observed,
                "min_observations": stats.min_observations, "non_finite_units": stats.non_finite_units,
                "batches_scanned": scan.batches, "samples_scanned": scan.samples,
                "activation": stats.kind, "after": stats.after, "threshold": threshold, **(extra or {})}
    of = f"{judged} judged units" if left_out else f"{stats.units} units"
    return make_finding(
        "dead-neurons", NAME, stats.where,
        f"{dead} of the {of} ({pct:.1f}%) of {_name(stats)} never fire on {observed} or more "
        f"observations each ({scan.samples} samples, {scan.batches} batches) {when} "
        f"(threshold {threshold:g}%).{note}",
        evidence)


def died_findings(session: Session, initial: ScanResult, reported: set, threshold: float,
                  metrics: dict) -> list:
    """dead-neurons for the activations that were alive at initialisation and are dead on the
    weights the shared training run ended with."""
    from ..probes.train_run import finished_run

    run = finished_run(session)
    if run is None:
        metrics["after_training"] = "not scanned: no training check (nan, grads) ran before this one"
        return []
    trained = run.activations_after
    if trained is None:
        metrics["after_training"] = "not scanned: the training run went non-finite (see the nan check)"
        return []
    metrics["after_training"] = {
        "steps": run.steps_done, "batches_scanned": trained.batches,
        "dead_pct": {s.where: round(s.dead_pct, 2) if s.judged_units else None
                     for s in trained.layers if s.family == RECTIFIER}}
    before = {s.where: s for s in initial.layers if s.family == RECTIFIER}
    findings = []
    for stats in trained.layers:
        start = before.get(stats.where)
        if stats.family != RECTIFIER or stats.where in reported or start is None or start.units != stats.units:
            continue
        died = int((stats.dead_mask & (start.counts > 0)).sum())  # fired at init, never after
        step = _silent_from(run, stats.after)
        when = f"after {run.steps_done} training steps"
        if step is not None:
            when += f" (`{stats.after}` got no gradient from step {step} on)"
        # by the step the layer feeding them went silent, or at the latest by the run's end
        died_by = step if step is not None else run.steps_done
        finding = dead_finding(stats, trained, threshold, when=when,
                               extra={"died_during_training": died, "dead_at_init": start.dead_units,
                                      "died_by_step": died_by, "layer_silent_from_step": step,
                                      "training_steps": run.steps_done})
        if finding is not None and died > 0:
            findings.append(dataclasses.replace(finding, message=finding.message + (
                f" {died} of them fired at initialisation: they died during training, by step {died_by}.")))
    return findings


def _silent_from(run, layer: Optional[str]) -> Optional[int]:
    """The step from which every gradient of `layer`'s own parameters was exactly 0 to the end
    of the run (the units it feeds passed none back), or None if it still got one at the end."""
    indices = [i for i, m in enumerate(run.modules) if m == layer] if layer is not None else []
    if not indices or not run.grad_norm:
        return None
    live = [step for step, row in enumerate(run.grad_norm) if any(row[i] != 0.0 for i in indices)]
    last = live[-1] if live else -1
    return last + 1 if last + 1 < len(run.grad_norm) else None


def saturated_finding(stats: ActivationStats, scan: ScanResult, threshold: float):
    stuck = stats.saturated_units(STUCK_RATE)
    if not _over(stuck, stats.units, threshold):
        return None
    pct = 100.0 * stuck / stats.units
    near = "0 or 1" if stats.family == SIGMOID else "±1"
    return make_finding(
        "saturated-activations", NAME, stats.where,
        f"{stuck} of the {stats.units} units ({pct:.1f}%) of {_name(stats)} are within "
        f"{SATURATION_MARGIN:g} of {near} on most of {scan.samples} samples at initialisation "
        f"({stats.saturated_output_pct:.1f}% of all its outputs; threshold {threshold:g}%).",
        {"saturated_pct": round(pct, 2), "saturated_units": stuck, "total_units": stats.units,
         "saturated_output_pct": round(stats.saturated_output_pct, 2),
         "batches_scanned": scan.batches, "samples_scanned": scan.samples,
         "activation": stats.kind, "after": stats.after, "threshold": threshold})


def _name(stats: ActivationStats) -> str:
    """`ReLU `network.3``, or `torch.relu `:relu#2` (after `layers.2`)` for a functional call,
    whose where names a forward, not a layer."""
    name = f"{stats.kind} `{stats.where}`"
    if ":" in stats.where and stats.after:
        name += f" (after `{stats.after}`)"
    return name


def _over(bad: int, units: int, threshold: float) -> bool:
    """More than `threshold` percent of the units are bad (all of them, for a tiny layer)."""
    if units < MIN_UNITS:
        return bad == units
    return 100.0 * bad / units > threshold


def _percent(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"dead: {name} must be a percentage between 0 and 100, not {value!r}") from None
    if not 0 <= value <= 100:
        raise ValueError(f"dead: {name} must be a percentage between 0 and 100, not {value:g}")
    return value
