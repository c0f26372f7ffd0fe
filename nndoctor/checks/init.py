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

One forward pass (train mode, the first batch), shared with the `data` check
through `forward_record`, and one eval forward/backward for the batch check.
Every hook is removed in `finally`; the runner restores weights and modes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.session import Batch, Session, output_loss, primary_output
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

# Layers whose output scale is set by their weights' init: the ones bad-init follows through depth.
WEIGHT_LAYERS = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
# Layers that reset the scale (BatchNorm, LayerNorm, ...): the init's scale cannot compound across them.
NORMALIZING_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                      nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm) \
    + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

# Autograd nodes that only move or copy values: looked through to find the op that made the output.
_SHAPE_ONLY_NODES = re.compile(r"^(View|UnsafeView|ReshapeAlias|T|Transpose|Permute|Squeeze|Unsqueeze|"
                               r"Clone|Alias|Expand|ToCopy|Contiguous|Select|Slice)Backward\d*$")
_ACTIVATION_NODES = {"SoftmaxBackward0": "softmax", "LogSoftmaxBackward0": "log_softmax",
                     "SigmoidBackward0": "sigmoid"}
_ACTIVATION_MODULES = ((nn.Softmax, "softmax"), (nn.Softmax2d, "softmax"), (nn.LogSoftmax, "log_softmax"),
                       (nn.Sigmoid, "sigmoid"))

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

CRITERION_NAMES = {"cross_entropy": "CrossEntropyLoss", "nll": "NLLLoss", "bce": "BCELoss",
                   "bce_logits": "BCEWithLogitsLoss"}


def criterion_kind(criterion: Any) -> Optional[str]:
    """cross_entropy / nll / bce / bce_logits for the classification losses we know, else None."""
    for cls, kind in ((nn.CrossEntropyLoss, "cross_entropy"), (nn.NLLLoss, "nll"),
                      (nn.BCEWithLogitsLoss, "bce_logits"), (nn.BCELoss, "bce")):
        if isinstance(criterion, cls):
            return kind
    functions = {F.cross_entropy: "cross_entropy", F.nll_loss: "nll", F.binary_cross_entropy: "bce",
                 F.binary_cross_entropy_with_logits: "bce_logits"}
    try:
        return functions.get(criterion)
    except TypeError:  # an unhashable callable
        return None


# --------------------------------------------------------------------------- the recorded forward

@dataclass
class ForwardRecord:
    """What one train-mode forward pass of the first batch showed (no loss computed)."""

    logits: Optional[torch.Tensor]  # the detached primary output; None under a loss_fn
    own_loss: bool  # the model returned its own .loss, or a loss_fn computes it
    final_activation: Optional[str]  # "softmax" | "log_softmax" | "sigmoid" | None (raw)
    activation_where: Optional[str]  # the module that applied it (None: the model's own forward)
    producer: Optional[str]  # the innermost module whose output is the model's output
    # [(path, per-unit std over the batch)] of the weight layers in execution order, with
    # (path, None) where a normalisation layer ran.
    signal: list = field(default_factory=list)
    input_readers: list = field(default_factory=list)  # [(path, module)] leaves fed the raw input
    # the activation was read from the output's values, the graph showing none (log(softmax(x)))
    activation_from_values: bool = False
    input_signal: dict = field(default_factory=dict)  # path -> the std over the batch of its input


def forward_record(session: Session) -> ForwardRecord:
    """The recorded forward of the first batch, done once per run (the data check reads it too)."""
    return session.shared("init.forward_record", lambda: _record_forward(session))


def _record_forward(session: Session) -> ForwardRecord:
    model = session.model
    batch = session.first_batch
    paths: dict = {}
    for name, module in model.named_modules():
        paths.setdefault(module, name)
    calls: list = []  # (path, module, output tensor) in completion order (children before parents)
    readers: list = []
    raw_inputs = batch.inputs
    seen_weight_layers: set = set()
    signal: list = []
    input_signal: dict = {}  # path -> the per-unit std over the batch of a weight layer's input

    def hook(module, inputs, output):
        path = paths.get(module)
        if path is None:
            return
        tensor = _as_tensor(output)
        calls.append((path, module, tensor))
        if not any(True for _ in module.children()) and \
                any(x is raw for x in inputs for raw in raw_inputs):
            readers.append((path, module))
        if isinstance(module, NORMALIZING_LAYERS):
            signal.append((path, None))  # the scale is reset here: the depth comparison restarts
        elif isinstance(module, WEIGHT_LAYERS) and module not in seen_weight_layers and tensor is not None \
                and tensor.is_floating_point() and tensor.dim() >= 2 and tensor.shape[0] >= 2:
            seen_weight_layers.add(module)
            signal.append((path, tensor.detach().float().std(dim=0).mean()))
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            if x is not None and x.is_floating_point() and x.dim() >= 2 and x.shape[0] == tensor.shape[0]:
                input_signal[path] = x.detach().float().std(dim=0).mean()

    handles = [m.register_forward_hook(hook) for m in paths]
    try:
        model.train()
        with torch.enable_grad():
            if session.setup.loss_fn is not None:
                session.setup.loss_fn(model, batch.raw)
                output = None
            else:
                output = session.forward(batch)
    finally:
        for h in handles:
            h.remove()

    measured = [s for _, s in signal if s is not None] + list(input_signal.values())
    stds = iter(torch.stack(measured).tolist() if measured else [])  # one host sync
    record = ForwardRecord(logits=None, own_loss=output is None or output_loss(output) is not None,
                           final_activation=None, activation_where=None, producer=None,
                           signal=[(p, None if v is None else next(stds)) for p, v in signal],
                           input_readers=readers)
    record.input_signal = {p: next(stds) for p in input_signal}
    logits = primary_output(output) if output is not None else None
    if isinstance(logits, torch.Tensor):
        record.logits = logits.detach()
        record.final_activation, record.activation_where, record.producer = _output_origin(logits, calls)
    return record


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


def _as_tensor(output: Any) -> Optional[torch.Tensor]:
    out = primary_output(output)
    return out if isinstance(out, torch.Tensor) else None


def _origin_node(t: torch.Tensor):
    """The autograd node that made `t`'s values, looking through views/reshapes/copies."""
    node = t.grad_fn
    while node is not None and _SHAPE_ONLY_NODES.match(type(node).__name__):
        parents = [n for n, _ in node.next_functions if n is not None]
        if len(parents) != 1:
            break
        node = parents[0]
    return node


def _output_origin(logits: torch.Tensor, calls: list) -> tuple:
    """(final activation, the module that applied it, the innermost module producing the output)."""
    origin = _origin_node(logits)
    producer = None
    for path, module, out in calls:  # completion order: the innermost module comes first
        if out is None:
            continue
        if out is logits or (origin is not None and _origin_node(out) is origin):
            producer = (path, module)
            break
    activation = _ACTIVATION_NODES.get(type(origin).__name__) if origin is not None else None
    if activation is None and origin is None and producer is not None:  # no autograd graph
        activation = next((kind for cls, kind in _ACTIVATION_MODULES if isinstance(producer[1], cls)), None)
    where = (producer[0] or None) if producer is not None else None
    return activation, (where if activation else None), where


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
    logits = record.logits.float()
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
    logits = record.logits
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
    runs, current = [], []
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
    probe = _BatchProbe(session.model, size)
    try:
        result = probe.run(batch)
    finally:
        probe.remove()
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


def probed_samples(size: int) -> list:
    """The samples whose outputs are differentiated: the first, a middle one and the last. A
    mix along the batch can be one-sided: an RNN run over the batch axis (a missing
    batch_first=True) makes sample i depend on samples 0..i-1 only, so sample 0 depends on no
    other (measured leak 0.0) while the last depends on all (0.22, issue 13)."""
    return sorted({0, size // 2, size - 1})


class _BatchProbe:
    """d(output of sample i)/d(every sample's input) for the `probed_samples`, in eval mode,
    and where the samples mix.

    Float inputs are differentiated directly; for integer inputs (token ids) the outputs of
    the Embeddings that read them stand in for them: only an Embedding whose indices are the
    batch's own (the same tensor, a view of it, or equal values), not one indexed by a table
    the model builds (positions, T5's relative-position buckets of shape (seq, seq) where
    seq may equal the batch size). Every module's batch-first output (and input) keeps its
    gradient, so the mix is located where the cross-sample gradient stops: upstream of it
    every sample feeds sample i's output, downstream only sample i does.
    """

    def __init__(self, model: nn.Module, size: int):
        self.model, self.size = model, size
        self.paths: dict = {}
        for name, module in model.named_modules():
            self.paths.setdefault(module, name)
        self.handles: list = []
        self.leaves: list = []
        self.calls: list = []  # (path, module, output, input) in completion order
        self.input_name = "inputs"
        self.batch_indices: list = []  # the batch's integer tensors (token ids)
        self.probed = probed_samples(size)
        self.sample = 0  # the probed sample whose output leaks most (located by locate())
        self.grads: dict = {}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _batch_first(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and t.requires_grad and t.dim() >= 1 and t.shape[0] == self.size

    def _record(self, module, inputs, output):
        out = _as_tensor(output)
        inp = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        if self._batch_first(out):
            self.calls.append((self.paths[module], module, out, inp if self._batch_first(inp) else None))

    def _from_batch(self, indices: Any) -> bool:
        """The indices are the batch's: the same tensor, a view of its storage, or equal values."""
        if not isinstance(indices, torch.Tensor):
            return False
        for ids in self.batch_indices:
            if indices is ids or (indices.device == ids.device and
                                  indices.untyped_storage().data_ptr() == ids.untyped_storage().data_ptr()):
                return True
            if indices.shape == ids.shape and not indices.is_floating_point() \
                    and torch.equal(indices, ids.to(indices.dtype)):
                return True
        return False

    def _embedding_leaf(self, module, inputs, output):
        if not isinstance(output, torch.Tensor) or not output.is_floating_point() \
                or output.dim() < 1 or output.shape[0] != self.size or not inputs or not self._from_batch(inputs[0]):
            return None
        leaf = output.detach().requires_grad_()
        self.leaves.append(leaf)
        return leaf

    def run(self, batch: Batch):
        """(the worst probed sample, its max |cross-sample gradient|, max |own gradient|,
        samples leaking into it), or a skip reason."""
        def lift(v):
            if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() >= 1 and v.shape[0] == self.size:
                leaf = v.detach().clone().requires_grad_()
                self.leaves.append(leaf)
                return leaf
            return v
        args = tuple(lift(a) for a in batch.args)
        kwargs = {k: lift(v) for k, v in batch.kwargs.items()}
        if not self.leaves:
            embeddings = [m for m in self.paths if isinstance(m, nn.Embedding)]
            if not embeddings:
                return "no float inputs and no nn.Embedding to differentiate through"
            self.input_name = "embeddings"
            self.batch_indices = [t for t in list(batch.args) + list(batch.kwargs.values())
                                  if isinstance(t, torch.Tensor) and not t.is_floating_point()
                                  and t.dim() >= 1 and t.shape[0] == self.size]
            self.handles += [m.register_forward_hook(self._embedding_leaf) for m in embeddings]
        self.handles += [m.register_forward_hook(self._record) for m in self.paths]
        self.model.eval()
        with torch.enable_grad():
            out = _as_tensor(self.model(*args, **kwargs))
        self.remove()
        if not self.leaves:
            return "no Embedding output indexed by the batch's own ids to differentiate through"
        if out is None or not out.is_floating_point() or out.dim() < 1 or out.shape[0] != self.size:
            return "the output's first dimension is not the batch"
        if not out.requires_grad:
            return "the output does not depend on the inputs through autograd"
        # A fixed random weighting of each probed sample's outputs: a plain sum can cancel
        # (softmax rows sum to 1).
        g = torch.Generator().manual_seed(0)
        weights = torch.randn(out[0].shape, generator=g).to(out.device, out.dtype)
        intermediates = [t for _, _, o, i in self.calls for t in (o, i) if t is not None]
        worst = None  # (ratio, sample, leak, own, leaking, intermediate gradients)
        for k, sample in enumerate(self.probed):
            objective = (out[sample] * weights).sum()
            grads = torch.autograd.grad(objective, self.leaves + intermediates, allow_unused=True,
                                        retain_graph=k < len(self.probed) - 1)
            leak = own = 0.0
            leaking = torch.zeros(self.size, dtype=torch.bool)
            for grad in grads[:len(self.leaves)]:
                if grad is None:
                    continue
                per_sample = _per_sample(grad, self.size).cpu()
                own_here = per_sample[sample].item()
                own = max(own, own_here)
                leak = max(leak, torch.cat([per_sample[:sample], per_sample[sample + 1:]]).max().item())
                leaking |= per_sample > BATCH_LEAK_TOL * max(own_here, 1e-30)
            leaking[sample] = False
            ratio = leak / own if own > 0 else (math.inf if leak > 0 else 0.0)
            if worst is None or ratio > worst[0]:
                worst = (ratio, sample, leak, own, int(leaking.sum()), grads[len(self.leaves):])
        _, self.sample, leak, own, others, rest = worst
        self.grads = {id(t): g for t, g in zip(intermediates, rest)}
        return self.sample, leak, own, others

    def _leaks(self, t: Optional[torch.Tensor]) -> Optional[bool]:
        grad = self.grads.get(id(t)) if t is not None else None
        if grad is None:
            return None
        per_sample = _per_sample(grad, self.size)
        own = per_sample[self.sample].item()
        others = torch.cat([per_sample[:self.sample], per_sample[self.sample + 1:]])
        return bool(others.max() > BATCH_LEAK_TOL * max(own, 1e-30))

    def locate(self) -> tuple:
        """(where, the last module before the mix, the first after it)."""
        after = None
        for path, _module, out, inp in self.calls:
            leaks = self._leaks(out)
            if leaks is None:
                continue
            if leaks:
                after = path or None
                continue
            if self._leaks(inp):  # every sample goes in, only sample i comes out: it mixes them
                return path or None, after, None
            # Its input was mixed already: by its parent's forward, between two children.
            parent = path.rpartition(".")[0] if path else None
            return parent or None, after, path or None
        return None, after, None


def _per_sample(grad: torch.Tensor, size: int) -> torch.Tensor:
    """max |gradient| per sample (NaN read as 0)."""
    return torch.nan_to_num(grad.detach().abs().float(), nan=0.0).reshape(size, -1).amax(1)
