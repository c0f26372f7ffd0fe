"""dead: units that never fire, and sigmoid/tanh units stuck at their asymptotes (SPEC §3).

Reads the shared activation scan (`nndoctor.scan`): the model at its initial
weights, in train mode, on the first few training batches, with activation
modules and functional activations (`F.relu` inside a `forward`) both seen.

* `dead-neurons`: a rectifier (ReLU, LeakyReLU, GELU, SiLU, ...) whose units
  never output > 0 over the scan, for more than `threshold` percent of them.
  A dead ReLU passes no gradient, so it never comes back.
* `saturated-activations`: a sigmoid/tanh whose units sit within
  `scan.SATURATION_MARGIN` of an asymptote on most of their inputs, for more
  than `saturated_threshold` percent of them. Their gradient is ≈ 0.

The scan is at initialisation: units that die later in training (a high LR
knocking biases negative) are not seen here.
"""

from __future__ import annotations

from ..engine import Session
from ..findings import make_finding
from ..scan import RECTIFIER, SATURATION_MARGIN, SIGMOID, ActivationStats, ScanResult, activation_scan
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
    outcome = Outcome(metrics={
        "activations_scanned": len(scan.layers),
        "batches_scanned": scan.batches,
        "samples_scanned": scan.samples,
        "dead_pct": {s.where: round(s.dead_pct, 2) for s in scan.layers if s.family == RECTIFIER},
        "saturated_pct": {s.where: round(100.0 * s.saturated_units(STUCK_RATE) / s.units, 2)
                          for s in scan.layers if s.family != RECTIFIER},
    })
    for stats in scan.layers:
        if stats.family == RECTIFIER:
            finding = dead_finding(stats, scan, dead_bar)
        else:
            finding = saturated_finding(stats, scan, saturated_bar)
        if finding is not None:
            outcome.findings.append(finding)
    return outcome


def dead_finding(stats: ActivationStats, scan: ScanResult, threshold: float):
    dead = stats.dead_units
    if not _over(dead, stats.units, threshold):
        return None
    pct = stats.dead_pct
    return make_finding(
        "dead-neurons", NAME, stats.where,
        f"{dead} of the {stats.units} units ({pct:.1f}%) of {_name(stats)} never fire "
        f"on {scan.samples} samples ({scan.batches} batches) at initialisation (threshold {threshold:g}%).",
        {"dead_pct": round(pct, 2), "dead_units": dead, "total_units": stats.units,
         "batches_scanned": scan.batches, "samples_scanned": scan.samples,
         "activation": stats.kind, "after": stats.after, "threshold": threshold})


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
