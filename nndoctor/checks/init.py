"""init: the model at its initial weights, before the first step (SPEC §3).

* `output-activation-mismatch`: the op that makes the model's output (found from
  the output's autograd node, so `nn.Softmax` and `F.softmax` alike) against the
  criterion: softmax/sigmoid into a loss that applies it itself
  (`CrossEntropyLoss`, `BCEWithLogitsLoss`), or raw logits into a loss that
  expects probabilities (`BCELoss`) or log-probabilities (`NLLLoss`).
* `init-loss`: the first loss against what an untrained classifier should score:
  ln C for C-class cross-entropy, ln 2 for binary cross-entropy.
* `bad-init`: the input-dependent signal (per-unit std over the batch) of the
  Linear/Conv layers, in execution order: collapsing or exploding with depth.
* `batch-dependency`: in eval mode, the gradient of the first, a middle and the
  last sample's output with respect to the other samples' inputs must be zero.

Judges the probes' records (`probes/forward.py`): one forward pass (train mode, the
first batch), shared with the `data` check through `forward_record`, and one eval
forward/backward for the batch check (`probe_batch`).
"""

from __future__ import annotations

import math
from typing import Any, Optional, cast

import torch

from ..engine.session import Batch, Session, criterion_kind
from ..probes.forward import ForwardRecord, forward_record, probe_batch
from ..report.findings import make_finding
from ..report.numbers import sig
from . import Outcome

NAME = "init"

INIT_LOSS_RATIO = 5.0  # Karpathy, "A Recipe for Training Neural Networks" (2019), "verify loss @
#   init": an untrained C-class classifier should score -ln(1/C). Logits ~ N(0, σ²) add about σ²/2
#   to ln C. Not 2x: torchvision's EfficientNet-B0 at its own init (classifier uniform ±1/√C, 0.32 at
#   10 classes, after train-mode BatchNorm) starts at 1.9-3.5x ln C over seeds 0-7 and trains fine
#   (bench/ZOO.md). Broken: hot_logits_mlp 6.7x, the real-bug programs 9x and more; 5x sits between.
COLLAPSE_RATIO = 1e-4  # He et al. (2015), "Delving Deep into Rectifiers", §2.2 and Fig. 3: a signal
#   scaled by β per layer is β^L after L layers. With Xavier init on ReLU (β = 1/√2) their 22-layer
#   net (signal ~7e-4 at the top) still converged, the 30-layer one (~4e-5) did not learn at all:
#   the bar sits between the two. PyTorch's default init (β ≈ 0.3-0.6 per plain layer) stays clear
#   of it up to ~10 layers without normalisation.
EXPLODE_RATIO = 1e4  # the same bar upwards: a signal 10^4 x larger at the last hidden layer.
BATCH_LEAK_TOL = 1e-6  # a batch-independent model has exactly zero cross-sample gradient (no
#   autograd path); the tolerance only absorbs float round-off relative to the sample's own gradient.
DISTRIBUTION_TOL = 1e-3  # |logsumexp(row)| (log-probabilities) or |sum(row) - 1| (probabilities)
#   below this reads as a normalised distribution. float32 round-off of log(softmax(x)) or
#   softmax(x) is small (measured ≤ 4.9e-7 for 2 to 32,000 classes, logit scales 0.1-30); raw logits of an
#   untrained model sit ~ln C or more away, so no healthy output row comes near it.
MAX_LAYERS_IN_METRICS = 40  # per-layer signal stds listed in the metrics (deep nets: the first 40)

DEFAULTS = {
    "loss_ratio": INIT_LOSS_RATIO,  # init-loss: first loss > loss_ratio x its expected value
    "collapse_ratio": COLLAPSE_RATIO,  # bad-init: last/first hidden layer signal below this
    "explode_ratio": EXPLODE_RATIO,  # bad-init: ... or above this
}

# (criterion kind, final activation) -> why it is wrong. None: raw logits.
MISMATCHES = {
    ("cross_entropy", "softmax"): "CrossEntropyLoss applies log-softmax itself, so the softmax runs twice",
    ("cross_entropy", "sigmoid"): "CrossEntropyLoss expects raw logits, not sigmoid outputs",
    ("bce_logits", "sigmoid"): "BCEWithLogitsLoss applies the sigmoid itself, so it runs twice",
    ("bce_logits", "softmax"): "BCEWithLogitsLoss expects raw logits, not softmax probabilities",
    ("bce_logits", "log_softmax"): "BCEWithLogitsLoss expects raw logits, not log-probabilities",
    ("bce", None): "BCELoss expects probabilities in [0, 1], not raw logits",
    ("bce", "log_softmax"): "BCELoss expects probabilities in [0, 1], not log-probabilities",
    ("nll", None): "NLLLoss expects log-probabilities (LogSoftmax), not raw logits",
    ("nll", "softmax"): "NLLLoss expects log-probabilities (LogSoftmax), not probabilities",
    ("nll", "sigmoid"): "NLLLoss expects log-probabilities (LogSoftmax), not sigmoid outputs",
}
# Harmless but redundant: log_softmax(log_softmax(x)) == log_softmax(x), so the loss is unchanged.
REDUNDANT = {("cross_entropy", "log_softmax")}

_VALUE_DESCRIPTIONS = {"log_softmax": "log-probabilities (rows <= 0, logsumexp 0)",
                       "softmax": "probabilities (rows in [0, 1] summing to 1)",
                       "sigmoid": "probabilities (every value in (0, 1))"}

CRITERION_NAMES: dict[Optional[str], str] = {"cross_entropy": "CrossEntropyLoss", "nll": "NLLLoss", "bce": "BCELoss",
                   "bce_logits": "BCEWithLogitsLoss"}


def _activation_from_values(logits: torch.Tensor, kind: str) -> Optional[str]:
    """The output's rows read as a distribution where the graph shows no activation: an op the
    graph walk does not know made it (`torch.log(softmax(x))` ends in a Log node, a hand-written
    softmax in a Div). Log-probabilities: every row <= 0 with logsumexp ≈ 0; probabilities:
    every row in [0, 1] summing to ≈ 1; for BCELoss, every value strictly inside (0, 1)
    (a sigmoid; a ReLU's exact zeros are not)."""
    if logits.numel() == 0 or logits.dim() == 0:
        return None
    values = logits.detach().double()
    if bool(torch.isnan(values).any()):
        return None
    if kind == "bce_logits":
        return None  # small raw logits of one output unit lie in (0, 1) too: only the graph can tell
    if kind == "bce":
        return "sigmoid" if bool(((values > 0) & (values < 1)).all()) else None
    rows = values.movedim(1 if values.dim() >= 2 else 0, -1)
    if rows.shape[-1] < 2:
        return None
    if bool((rows <= DISTRIBUTION_TOL).all()) and \
            float(torch.logsumexp(rows, -1).abs().max()) <= DISTRIBUTION_TOL:
        return "log_softmax"
    if bool(((rows >= 0) & (rows <= 1)).all()) and float((rows.sum(-1) - 1).abs().max()) <= DISTRIBUTION_TOL:
        return "softmax"
    return None


# --------------------------------------------------------------------------- the check

def run(session: Session, settings: dict) -> Outcome:
    record = forward_record(session)
    outcome = Outcome()
    skipped: dict = {}
    kind = None
    if record.own_loss or session.uses_model_loss:
        skipped["output-activation-mismatch"] = skipped["init-loss"] = \
            "the loss comes from the model or a loss_fn: no criterion to compare with"
    else:
        kind = criterion_kind(session.criterion)
        outcome.metrics["criterion"] = CRITERION_NAMES.get(kind, _name_of(session.criterion))
        if kind is not None and record.final_activation is None and record.logits is not None:
            record.final_activation = _activation_from_values(record.logits, kind)
            record.activation_from_values = record.final_activation is not None
        outcome.metrics["final_activation"] = record.final_activation or "none (logits)"
        if kind is None:
            reason = f"no expected value for {outcome.metrics['criterion']} (classification losses only)"
            skipped["output-activation-mismatch"] = skipped["init-loss"] = reason
        else:
            outcome.findings += mismatch_findings(session, record, kind)
            outcome.findings += init_loss_findings(session, record, kind, settings, outcome.metrics, skipped)
    outcome.findings += bad_init_findings(record, settings, outcome.metrics, skipped)
    outcome.findings += batch_dependency_findings(session, outcome.metrics, skipped)
    if skipped:
        outcome.metrics["not_checked"] = skipped
    return outcome


def _name_of(obj: Any) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


# --------------------------------------------------------------------------- output-activation-mismatch

def mismatch_findings(session: Session, record: ForwardRecord, kind: str) -> list:
    activation = record.final_activation
    key = (kind, activation)
    if key not in MISMATCHES and key not in REDUNDANT:
        return []
    logits = cast(torch.Tensor, record.logits).float()
    finite = logits[torch.isfinite(logits)]
    low, high = (finite.min().item(), finite.max().item()) if finite.numel() else (math.nan, math.nan)
    chosen = session.setup.criterion is None
    criterion = CRITERION_NAMES[kind] + (" (chosen by nndoctor)" if chosen else "")
    evidence = {"criterion": CRITERION_NAMES[kind], "criterion_chosen": chosen,
                "final_activation": activation or "none (logits)", "output_min": low, "output_max": high}
    evidence["activation_from_values"] = record.activation_from_values
    output_desc = f"The model's raw output (range {low:.3g} to {high:.3g})"
    if activation is not None:
        applied = f"`{record.activation_where}`" if record.activation_where else "the model's forward"
        output_desc = f"The model's output, a {activation} applied by {applied} (range {low:.3g} to {high:.3g}),"
        if record.activation_from_values:
            output_desc = (f"The model's output (range {low:.3g} to {high:.3g}), {_VALUE_DESCRIPTIONS[activation]} "
                           "by its values,")
    if key in REDUNDANT:
        if chosen:
            return []  # we chose CrossEntropyLoss; NLLLoss would be the matching choice, same loss
        return [make_finding(
            "output-activation-mismatch", NAME, record.activation_where,
            f"{output_desc} is fed to {criterion}: redundant but harmless, since log_softmax of "
            "log-probabilities leaves them unchanged; NLLLoss is the matching loss.",
            evidence, severity="info")]
    where = record.activation_where if activation is not None else record.producer
    return [make_finding("output-activation-mismatch", NAME, where,
                         f"{output_desc} is fed to {criterion}: {MISMATCHES[key]}.", evidence)]


# --------------------------------------------------------------------------- init-loss

def init_loss_findings(session: Session, record: ForwardRecord, kind: str, settings: dict,
                       metrics: dict, skipped: dict) -> list:
    criterion = session.criterion
    if getattr(criterion, "reduction", "mean") != "mean":
        skipped["init-loss"] = "the criterion does not average (reduction != 'mean')"
        return []
    if kind == "bce_logits" and getattr(criterion, "pos_weight", None) is not None:
        skipped["init-loss"] = "BCEWithLogitsLoss with pos_weight: no single expected value"
        return []
    if (kind, record.final_activation) in MISMATCHES:
        skipped["init-loss"] = "the output activation does not match the criterion (see that finding)"
        return []
    logits = cast(torch.Tensor, record.logits)
    if kind in ("cross_entropy", "nll"):
        classes = logits.shape[1] if logits.dim() >= 2 else logits.shape[0]
        expected, expected_desc = math.log(classes), f"ln {classes}"
    else:
        classes, expected, expected_desc = 2, math.log(2), "ln 2"
    if classes < 2:
        skipped["init-loss"] = "a single output class"
        return []
    batch = session.first_batch
    with torch.no_grad():
        first = session.loss(batch, output=logits).item()
    ratio_bar = float(settings.get("loss_ratio", INIT_LOSS_RATIO))
    metrics.update(first_loss=first, expected_loss=round(expected, 6),
                   loss_ratio=round(first / expected, 4) if math.isfinite(first) else None)
    prior = _label_prior_entropy(batch, kind, classes)
    if prior is not None:
        metrics["prior_entropy"] = round(prior, 6)
    if not math.isfinite(first):
        skipped["init-loss"] = "the first loss is not finite (see the nan check)"
        return []
    if first <= ratio_bar * expected:
        return []
    scale = logits.float()
    scale = scale[torch.isfinite(scale)]
    logit_std = scale.std().item() if scale.numel() > 1 else math.nan
    evidence = {"first_loss": first, "expected_loss": expected, "ratio": first / expected,
                "classes": classes, "logit_std": logit_std}
    if prior is not None:
        evidence["prior_entropy"] = prior
    # the logits layer: the output itself, or the last Linear/Conv before a (Log)Softmax/Sigmoid
    weight_layers = [p for p, v in record.signal if v is not None]
    where = record.producer if record.final_activation is None or not weight_layers else weight_layers[-1]
    return [make_finding(
        "init-loss", NAME, where,
        f"The first loss is {first:.4g}, {first / expected:.1f}x the {expected:.3f} ({expected_desc}) "
        f"an untrained classifier should score; the logits' std is {logit_std:.3g}.",
        evidence)]


def _label_prior_entropy(batch: Batch, kind: str, classes: int) -> Optional[float]:
    """The loss of the best constant prediction (the label prior) on the first batch: the floor a
    well-biased init reaches (Karpathy: 'init well'); ln C/ln 2 is what an unbiased init scores."""
    target = batch.target
    if not isinstance(target, torch.Tensor) or target.numel() == 0:
        return None
    if kind in ("cross_entropy", "nll") and not target.is_floating_point():
        labels = target.reshape(-1)
        labels = labels[(labels >= 0) & (labels < classes)]
        if labels.numel() == 0:
            return None
        p = torch.bincount(labels, minlength=classes).double() / labels.numel()
    elif kind in ("bce", "bce_logits") and target.is_floating_point():
        q = target.double().mean().clamp(0, 1)
        p = torch.stack([q, 1 - q])
    else:
        return None
    p = p[p > 0]
    return float(-(p * p.log()).sum())


# --------------------------------------------------------------------------- bad-init

def bad_init_findings(record: ForwardRecord, settings: dict, metrics: dict, skipped: dict) -> list:
    """Follow the signal through the hidden weight layers, between normalisation layers (which
    reset its scale). The output layer's scale is init-loss's business, so it is left out."""
    weights = [(p, v) for p, v in record.signal if v is not None]
    metrics["signal_std"] = {p: sig(v) for p, v in weights[:MAX_LAYERS_IN_METRICS]}
    last_path = weights[-1][0] if weights else None
    constant = _constant_layer(record, weights[:-1])
    if constant is not None:
        return [constant]
    runs: list = []
    current: list = []
    for path, std in record.signal:
        if std is None or path == last_path:
            runs.append(current)
            current = []
        else:
            current.append((path, std))
    runs = [r for r in runs + [current] if len(r) >= 2]
    if not runs:
        skipped["bad-init"] = ("no two hidden Linear/Conv layers in a row without a normalisation "
                               "layer between them")
        return []
    collapse = float(settings.get("collapse_ratio", COLLAPSE_RATIO))
    explode = float(settings.get("explode_ratio", EXPLODE_RATIO))
    worst = None  # (how far outside the bounds, finding)
    ratios_seen = []
    for run_ in runs:
        first_path, first = run_[0]
        if not (math.isfinite(first) and first > 0):
            continue
        ratios = [(p, v / first) for p, v in run_[1:]]
        last_ratio = ratios[-1][1]
        if not math.isfinite(last_ratio):
            continue
        ratios_seen.append(last_ratio)
        if collapse <= last_ratio <= explode:
            continue
        shrinking = last_ratio < collapse
        bar = collapse if shrinking else explode
        index, (where, at_ratio) = next((i, pr) for i, pr in enumerate(ratios, 1)
                                        if (pr[1] < collapse if shrinking else pr[1] > explode))
        gain = at_ratio ** (1.0 / index)  # per layer, up to where it crossed the bar
        severity = (bar / last_ratio) if shrinking and last_ratio > 0 else \
            (math.inf if shrinking else last_ratio / bar)
        last_std = run_[-1][1]
        evidence = {"first_layer": first_path, "first_std": first, "last_layer": run_[-1][0],
                    "last_std": last_std, "ratio": last_ratio, "ratio_at_where": at_ratio,
                    "layers": len(run_), "gain_per_layer": gain, "threshold": bar}
        end = (f"{last_std:.3g} at `{run_[-1][0]}` ({last_ratio:.2g}x)" if last_ratio > 0 else
               f"exactly 0 at `{run_[-1][0]}` (its output no longer depends on the input)")
        finding = make_finding(
            "bad-init", NAME, where,
            f"At initialisation the signal {'collapses' if shrinking else 'explodes'} with depth: its std "
            f"over the batch goes from {first:.3g} at `{first_path}` to {end}, about {gain:.2g}x per "
            f"layer, passing {bar:g}x at `{where}`.",
            evidence)
        if worst is None or severity > worst[0]:
            worst = (severity, finding)
    if ratios_seen:
        # the run furthest from keeping its scale (|log ratio| largest)
        metrics["depth_ratio"] = sig(max(ratios_seen, key=lambda r: abs(math.log(r)) if r > 0 else math.inf))
    return [worst[1]] if worst else []


def _constant_layer(record: ForwardRecord, hidden: list):
    """bad-init for the first hidden weight layer whose output is the same for every sample
    (std over the batch exactly 0) while its input is not: the most extreme collapse, e.g. all-zero
    weights. Every layer after it sees a constant; no ratio of stds can be formed from it."""
    for path, std in hidden:
        varies = record.input_signal.get(path, 0.0)
        if std == 0.0 and varies > 0.0:
            later = [p for p, v in hidden if p != path]
            return make_finding(
                "bad-init", NAME, path,
                f"At initialisation the output of `{path}` is exactly the same for every sample (std over "
                f"the batch 0, its input's {varies:.3g}): its weights ignore the input (all zero?), so "
                "nothing after it sees which sample it is.",
                {"first_layer": path, "first_std": 0.0, "input_std": varies, "ratio": 0.0,
                 "layers_after": len(later), "threshold": COLLAPSE_RATIO})
    return None


# --------------------------------------------------------------------------- batch-dependency

def batch_dependency_findings(session: Session, metrics: dict, skipped: dict) -> list:
    if session.setup.loss_fn is not None:
        skipped["batch-dependency"] = "a loss_fn calls the model: its inputs are not known"
        return []
    batch = session.first_batch
    size = batch.batch_size
    if size is None or size < 2:
        skipped["batch-dependency"] = "the batch has fewer than two samples"
        return []
    probe, result = probe_batch(session.model, batch, BATCH_LEAK_TOL)
    if isinstance(result, str):
        skipped["batch-dependency"] = result
        return []
    sample, leak, own, others = result
    ratio = leak / own if own > 0 else (math.inf if leak > 0 else 0.0)
    metrics["batch_leak_ratio"] = sig(ratio)
    metrics["batch_probed_samples"] = probe.probed
    if ratio <= BATCH_LEAK_TOL:
        return []
    where, after, before = probe.locate()
    inside = f"in `{where}`" if where else "in the model's forward"
    between = f", between `{after}` and `{before}`" if after and before else ""
    evidence = {"batch_size": size, "sample": sample, "probed_samples": probe.probed,
                "other_samples_leaking": others, "leak_ratio": ratio, "input": probe.input_name,
                "after": after, "before": before}
    return [make_finding(
        "batch-dependency", NAME, where,
        f"In eval mode, sample {sample}'s output depends on {others} of the {size - 1} other samples' "
        f"{probe.input_name} (gradient {ratio:.3g}x its own); the samples mix {inside}{between}.",
        evidence)]
