"""static: the setup mistakes that show before any step (SPEC §3, "setup mistakes").

A look at the model, its output and its loss on the first batches, nothing trained:

* from the targets of the scanned batches: `constant-targets` (one value everywhere, also
  in random samples of the dataset), `unshuffled-data` (each batch holds one class while
  the dataset holds several);
* from one eval-mode forward pass under hooks (`static_probe.trace_forward`):
  `single-unit-softmax` (a softmax over a size-1 dimension makes the output),
  `dropout-in-eval` (a dropout call with `training=True` in eval mode, and two eval passes
  that differ), `unregistered-module` (layers or trainable tensors held in plain
  attributes/lists/dicts, used in forward, missing from `parameters()`);
* from the weights and one backward at init: `symmetric-init` (every unit of a layer the
  same, and their gradients the same, so nothing can ever tell them apart);
* from the criterion on (output, target): `shape-broadcast`, `loss-task-mismatch`,
  `output-range-mismatch`, `unscaled-targets`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.session import LABEL_KEYS, SECOND_COPY_MAX_MB, Batch, Session, primary_output, split_batch
from ..probes import static as probe
from ..report.findings import make_finding
from . import Outcome

NAME = "static"

SCAN_BATCHES = 8  # the data check's 8 batches (the engine caches them: no extra loading)
DATASET_SAMPLES = 256  # random samples of the dataset behind the loader, the reference the scanned
#   batches are compared with. 256 labels: a class of 2% share is seen with probability 1 - 0.98**256
#   = 99.4%, and reading them costs 256 item loads, done only when the batches look suspicious.
MIN_SAMPLES = 2  # constant-targets: fewer targets than this say nothing about their spread
# unshuffled-data. Within-batch label agreement A_in = mean over batches of sum_c share_c², the
# dataset's A = sum_c p_c² (the chance that two random samples share a class). Shuffled batches of
# size B have A_in ≈ A + (1 - A)/B; class-sorted ones A_in ≈ 1. The excess (A_in - A)/(1 - A) is
# 1/B (0.03 at B = 32, 0.125 at B = 8) plus noise when shuffled, ~1 when sorted.
UNSHUFFLED_EXCESS = 0.8
MIN_PURITY_BATCHES = 3  # batches needed: two could share a class by chance
MIN_PURITY_BATCH_SIZE = 8  # below this the shuffled excess (1/B) nears the bar
# Identical units: constant init is bit-identical across units; 1e-6 of the largest weight only
# absorbs float32 round-off (eps 1.2e-7) of an init computed per row.
SYMMETRY_TOL = 1e-6
# Emulated training steps after which units still identical are judged stuck: one step lets a
# zero-initialised layer downstream (a head, a residual branch) pass distinct gradients, a chain
# of zero layers needs one step per link; three cover a zero head behind a zero residual branch.
SYMMETRY_ROUNDS = 3
# Two eval passes of a deterministic model agree to round-off; dropout changes outputs by O(1).
EVAL_DIFFERENCE_TOL = 1e-4  # relative to the largest |output|
OUT_OF_RANGE_SHARE = 0.05  # output-range-mismatch: 5% of the targets beyond the output's range.
#   A bounded output cannot fit them at all; a healthy bounded regression (sigmoid on [0, 1]
#   targets, ReLU on non-negative ones) has none outside.
# unscaled-targets: the targets' RMS sqrt(mean(y²)) above 10x unit scale, the bar `data` applies
# to inputs (LeCun et al. 1998, "Efficient BackProp" §4.3: ~unit scale); the output layer's init
# (and its bias) starts at unit scale, so larger targets make the first loss (RMS²) and its
# gradients 100x a standardised target's.
TARGET_RMS_LIMIT = 10.0
# loss-task-mismatch, one output regressed onto integers: read as class labels when they are 3 to 10
# consecutive values from 0 or 1 (2 values are binary labels, which MSE fits fine), each used at
# least half as often as an even split. Counts (Poisson-like) decay geometrically and fail the
# share; 10 classes is the largest label set of the Keras programs this comes from (MNIST/CIFAR).
MIN_CLASSES, MAX_CLASSES_AS_NUMBERS, MIN_CLASS_SHARE = 3, 10, 0.5
MIN_LABEL_SAMPLES = 64  # fewer targets than this do not show how evenly the values are used
IGNORE_INDEX = -100  # PyTorch's CrossEntropyLoss/NLLLoss default and Hugging Face's padded labels

DEFAULTS = {
    "batches": SCAN_BATCHES,
    "max_target_rms": TARGET_RMS_LIMIT,
}

REGRESSION_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)
REGRESSION_FUNCTIONS = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss)
CLASS_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss)
CLASS_FUNCTIONS = (F.cross_entropy, F.nll_loss)

# The output range of the op that makes the output, by autograd node (closed bounds).
OUTPUT_RANGES = {
    "SigmoidBackward0": ("sigmoid", 0.0, 1.0), "TanhBackward0": ("tanh", -1.0, 1.0),
    "SoftmaxBackward0": ("softmax", 0.0, 1.0), "HardsigmoidBackward0": ("hardsigmoid", 0.0, 1.0),
    "ReluBackward0": ("ReLU", 0.0, math.inf), "SoftplusBackward0": ("softplus", 0.0, math.inf),
    "ExpBackward0": ("exp", 0.0, math.inf), "AbsBackward0": ("abs", 0.0, math.inf),
    "LogSoftmaxBackward0": ("log_softmax", -math.inf, 0.0), "LogSigmoidBackward0": ("logsigmoid", -math.inf, 0.0),
}


def run(session: Session, settings: dict) -> Outcome:
    outcome = Outcome()
    outcome.findings = list(session.shared("static.findings", lambda: _diagnose(session, settings, outcome.metrics)))
    return outcome


def findings_of(session: Session) -> list:
    """The static findings of this run (computed now if `static` did not run), for other checks'
    messages; empty when the model or data cannot be looked at."""
    try:
        return session.shared("static.findings", lambda: _diagnose(session, DEFAULTS, {}))
    except Exception:
        return []


def _diagnose(session: Session, settings: dict, metrics: dict) -> list:
    count = int(settings.get("batches", SCAN_BATCHES))
    if count < 1:
        raise ValueError(f"static.batches must be at least 1, not {count}")
    batches = session.batches(count)
    metrics["batches_scanned"] = len(batches)
    findings: list = []
    model = session.model
    own_loss_fn = session.setup.loss_fn is not None
    if not own_loss_fn:
        targets = [_target(b) for b in batches]
        findings += constant_targets(session, targets, metrics)
        findings += unshuffled_data(session, targets, metrics)
    found = probe.unregistered(model)
    watch_tensors = [o for u in found for _, o in u.items if isinstance(o, torch.Tensor)]
    watch_modules = [o for u in found for _, o in u.items if isinstance(o, nn.Module)]
    batch = batches[0]
    # under a loss_fn the model is called by it: trace that call (its output is the loss)
    loss_fn = cast(Callable, session.setup.loss_fn)
    call = (lambda: loss_fn(model, batch.raw)) if own_loss_fn else \
        (lambda: model(*batch.args, **batch.kwargs))
    trace = probe.trace_forward(model, call, watch_tensors=watch_tensors, watch_modules=watch_modules)
    findings += unregistered_module(found, trace, metrics)
    if not own_loss_fn:
        findings += single_unit_softmax(trace, metrics)
    findings += dropout_in_eval(model, call, trace, metrics)
    findings += symmetric_init(session, batch, metrics)
    if not session.uses_model_loss:
        findings += loss_findings(session, batches, trace, settings, metrics)
    return findings


# --------------------------------------------------------------------------- targets

def _target(batch: Batch) -> Optional[torch.Tensor]:
    if isinstance(batch.target, torch.Tensor):
        return batch.target
    return next((batch.kwargs[k] for k in LABEL_KEYS if isinstance(batch.kwargs.get(k), torch.Tensor)), None)


def _kept(t: torch.Tensor) -> torch.Tensor:
    """The target values a loss sees: integer targets without the ignore_index padding."""
    flat = t.detach().reshape(-1)
    return flat if flat.is_floating_point() else flat[flat != IGNORE_INDEX]


def sample_labels(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """One class label per sample: integer (B,)/(B, 1) targets, binary float ones, or one-hot rows."""
    if t is None or t.dim() == 0:
        return None
    if t.dim() == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() == 1:
        if not t.is_floating_point():
            return t.long()
        return t.long() if bool(((t == 0) | (t == 1)).all()) else None
    if t.dim() == 2 and t.is_floating_point() and _one_hot(t):
        return t.argmax(1)
    return None


def _one_hot(t: torch.Tensor) -> bool:
    return t.dim() >= 2 and t.shape[-1] >= 2 and bool(((t == 0) | (t == 1)).all()) and bool((t.sum(-1) == 1).all())


def _dataset_reference(session: Session) -> Optional[list]:
    """Target batches to compare the scanned ones with: every batch of a loader that is a list
    (already in memory), else random samples of the DataLoader's dataset, stacked as one batch."""
    loader = session.setup.train_loader
    if isinstance(loader, (list, tuple)):
        return [t for t in (_target(split_batch(b)) for b in loader) if isinstance(t, torch.Tensor)]
    samples = probe.dataset_targets(loader, DATASET_SAMPLES, session.seed, LABEL_KEYS)
    if not samples:
        return None
    try:
        return [torch.stack([torch.as_tensor(t) for t in samples])]
    except (RuntimeError, TypeError, ValueError):  # targets of different shapes (sequences), not numbers
        return None


def constant_targets(session: Session, targets: list, metrics: dict) -> list:
    present = [t for t in targets if t is not None]
    if not present:
        return []
    values = torch.cat([_kept(t).float() for t in present])
    samples = sum(t.shape[0] if t.dim() else 1 for t in present)
    if values.numel() < MIN_SAMPLES or samples < MIN_SAMPLES:
        return []
    low, high = values.min().item(), values.max().item()
    metrics["target_min"], metrics["target_max"] = low, high
    if low != high:
        return []
    reference = _dataset_reference(session)
    checked = 0
    if reference:
        pool = torch.cat([_kept(t).float().cpu() for t in reference])
        checked = sum(t.shape[0] if t.dim() else 1 for t in reference)
        if pool.numel() and (pool != low).any():
            return []  # the dataset holds other values: the loader's order (see unshuffled-data)
    also = f" and in {checked} reference samples of the dataset" if checked else ""
    return [make_finding(
        "constant-targets", NAME, "train_loader",
        f"All {values.numel():,} target values in the {len(present)} scanned batches{also} equal "
        f"{low:.6g}: the model can only learn that constant.",
        {"value": low, "targets": values.numel(), "batches_scanned": len(present), "dataset_samples": checked,
         "dtype": str(present[0].dtype).replace("torch.", "")})]


def unshuffled_data(session: Session, targets: list, metrics: dict) -> list:
    found = [sample_labels(t) for t in targets]
    labels = [lab.cpu() for lab in found if lab is not None and lab.numel() >= MIN_PURITY_BATCH_SIZE]
    if len(labels) < MIN_PURITY_BATCHES:
        return []
    within = sum(_agreement(lab) for lab in labels) / len(labels)
    majority = [_majority_share(lab) for lab in labels]
    metrics["batch_label_agreement"] = round(within, 4)
    if within < UNSHUFFLED_EXCESS:  # the excess cannot reach the bar below this
        return []
    reference = _dataset_reference(session)
    pool = [sample_labels(t) for t in reference] if reference else None
    if pool and all(p is not None for p in pool):
        dataset_labels = torch.cat([p.reshape(-1) for p in pool if p is not None]).cpu()
        source = "the loader's batches" if isinstance(session.setup.train_loader, (list, tuple)) \
            else f"{dataset_labels.numel()} random samples of the dataset"
    else:
        dataset_labels, source = torch.cat(labels), "the scanned batches together"
    overall = _agreement(dataset_labels)
    classes = int(dataset_labels.unique().numel())
    if overall >= 1.0:
        return []
    excess = (within - overall) / (1.0 - overall)
    metrics["unshuffled_excess"] = round(excess, 4)
    if excess < UNSHUFFLED_EXCESS:
        return []
    sampler = type(getattr(session.setup.train_loader, "sampler", None)).__name__
    how = f" (its sampler is a {sampler})" if sampler != "NoneType" else ""
    shares = _shares(dataset_labels).tolist()
    return [make_finding(
        "unshuffled-data", NAME, "train_loader",
        f"Each of the {len(labels)} scanned batches holds {min(majority):.0%}–{max(majority):.0%} one class "
        f"(mean {sum(majority) / len(majority):.0%}), while {source} hold {classes} classes (largest "
        f"{shares[0]:.0%}): the loader does not shuffle{how}, so every step sees one class.",
        {"batches_scanned": len(labels), "batch_majority_share": [round(m, 4) for m in majority],
         "within_batch_agreement": within, "dataset_agreement": overall, "excess": excess,
         "threshold": UNSHUFFLED_EXCESS, "classes": classes, "reference": source, "sampler": sampler})]


def _shares(labels: torch.Tensor) -> torch.Tensor:
    """Each class's share of the labels, largest first (any label values, -100 padding included)."""
    counts = torch.unique(labels, return_counts=True)[1].double()
    return (counts / labels.numel()).sort(descending=True).values


def _agreement(labels: torch.Tensor) -> float:
    return float((_shares(labels) ** 2).sum())


def _majority_share(labels: torch.Tensor) -> float:
    return float(_shares(labels)[0])


# --------------------------------------------------------------------------- the traced forward

def unregistered_module(found: list, trace: probe.ForwardTrace, metrics: dict) -> list:
    findings = []
    for entry in found:
        used = [(label, obj) for label, obj in entry.items
                if (id(obj) in trace.called if isinstance(obj, nn.Module) else id(obj) in trace.used_ids)]
        if not used:
            continue
        labels = [label for label, _ in used]
        kinds = sorted({type(obj).__name__ for _, obj in used})
        count = sum(entry.missing[label] for label in labels)
        container = f"a plain {entry.container}"
        shown = ", ".join(f"`{label}`" for label in labels[:4]) + (f" and {len(labels) - 4} more" if len(labels) > 4 else "")
        findings.append(make_finding(
            "unregistered-module", NAME, entry.path,
            f"{shown} ({', '.join(kinds)}; {count:,} trainable values) {'is' if len(used) == 1 else 'are'} "
            f"held in {container}, used in forward but not in model.parameters(): never trained by an "
            f"optimizer built from them, nor moved by .to().",
            {"items": labels, "types": kinds, "values": count, "container": entry.container}))
    metrics["unregistered"] = len(findings)
    return findings


def single_unit_softmax(trace: probe.ForwardTrace, metrics: dict) -> list:
    output = primary_output(trace.output)
    if not isinstance(output, torch.Tensor):
        return []
    origin = probe.origin_node(output) if output.grad_fn is not None else None
    for call in trace.softmaxes:
        if call.size != 1 or call.result is None:
            continue
        makes_output = call.result is output or (origin is not None and call.result.grad_fn is not None
                                                 and probe.origin_node(call.result) is origin)
        if not makes_output:
            continue
        value = "1" if call.kind == "softmax" else "0"
        where = call.module or None
        return [make_finding(
            "single-unit-softmax", NAME, where,
            f"The output is a {call.kind} over dim {call.dim} of an input of shape {call.shape}, a dimension of "
            f"size 1: it is exactly {value} for every sample and its gradient is exactly 0, so nothing "
            "before it can learn.",
            {"function": call.kind, "dim": call.dim, "input_shape": list(call.shape), "constant": float(value)})]
    return []


def dropout_in_eval(model: nn.Module, call, trace: probe.ForwardTrace, metrics: dict) -> list:
    if not trace.dropouts:
        return []
    difference, scale = probe.eval_difference(model, call)
    metrics["eval_difference"] = difference
    if not difference > EVAL_DIFFERENCE_TOL * max(scale, 1e-12):
        return []
    first = trace.dropouts[0]
    where = first.module or None
    inside = f"`{where}`" if where else "the model's forward"
    return [make_finding(
        "dropout-in-eval", NAME, where,
        f"In eval mode, {inside} calls {first.function} with p={first.p:g} and training on: two eval-mode "
        f"passes of the same batch differ by up to {difference:.3g} (outputs up to {scale:.3g}).",
        {"function": first.function, "p": first.p, "calls": len(trace.dropouts), "max_difference": difference,
         "output_max": scale})]


# --------------------------------------------------------------------------- symmetric-init

def symmetric_init(session: Session, batch: Batch, metrics: dict) -> list:
    candidates = probe.identical_rows(session.model, SYMMETRY_TOL)
    metrics["identical_unit_layers"] = len(candidates)
    if not candidates:
        return []
    try:
        layers = probe.symmetric_layers(session.model, lambda: session.loss(batch), candidates,
                                        SYMMETRY_TOL, SYMMETRY_ROUNDS, SECOND_COPY_MAX_MB)
    except Exception as exc:  # the loss itself fails on this batch: the checks that compute it report that
        metrics["symmetric_init"] = f"not checked: the loss raised {type(exc).__name__}"
        return []
    stuck = [(path, module, float(module.weight.detach().reshape(-1)[0]), grad_max)
             for path, module, grad_max in layers]
    if not stuck:
        return []
    path, module, value, grad_max = stuck[0]
    units = module.weight.shape[0]
    others = [p for p, *_ in stuck[1:]]
    more = f"; so do {', '.join(f'`{p}`' for p in others)}" if others else ""
    return [make_finding(
        "symmetric-init", NAME, path,
        f"All {units} units of `{path}` start identical (every weight {value:.4g}) and get identical "
        f"gradients (largest {grad_max:.3g}), also after {SYMMETRY_ROUNDS} emulated steps: no step can tell "
        f"them apart, so the layer acts as one unit{more}.",
        {"layer": path, "units": units, "weight_value": value, "grad_max": grad_max,
         "layers": [p for p, *_ in stuck]})]


# --------------------------------------------------------------------------- the loss

def _loss_kind(criterion: Any) -> Optional[str]:
    if isinstance(criterion, REGRESSION_LOSSES) or any(criterion is f for f in REGRESSION_FUNCTIONS):
        return "regression"
    if isinstance(criterion, CLASS_LOSSES) or any(criterion is f for f in CLASS_FUNCTIONS):
        return "classification"
    return None


def loss_findings(session: Session, batches: list, trace: probe.ForwardTrace, settings: dict,
                  metrics: dict) -> list:
    output = primary_output(trace.output)
    target = _target(batches[0])
    if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor) or not output.is_floating_point():
        return []
    criterion = session.criterion
    kind = _loss_kind(criterion)
    metrics["loss_kind"] = kind or "unknown"
    findings = shape_broadcast(criterion, output, target, trace, metrics)
    if kind is None:
        return findings
    targets = [t for t in (_target(b) for b in batches) if isinstance(t, torch.Tensor)]
    mismatch = loss_task_mismatch(session, kind, output, targets, trace)
    findings += mismatch
    if kind == "regression" and not mismatch and all(t.is_floating_point() for t in targets):
        values = torch.cat([t.detach().reshape(-1).double() for t in targets])
        values = values[torch.isfinite(values)]
        if values.numel():
            findings += output_range_mismatch(session.model, output, values, trace, metrics)
            findings += unscaled_targets(values, float(settings.get("max_target_rms", TARGET_RMS_LIMIT)),
                                         len(targets), metrics)
    return findings


def shape_broadcast(criterion, output: torch.Tensor, target: torch.Tensor, trace: probe.ForwardTrace,
                    metrics: dict) -> list:
    if tuple(output.shape) == tuple(target.shape):
        return []
    seen = probe.criterion_trace(criterion, output.detach(), target)
    expanding = [b for b in seen.broadcasts if math.prod(b[3]) > max(math.prod(b[1]), math.prod(b[2]))]
    if seen.broadcast_warning is None and not expanding:
        return []
    try:
        result = tuple(torch.broadcast_shapes(output.shape, target.shape))
    except RuntimeError:
        return []
    where = trace.producer(output)
    of = f"the output of `{where}`" if where else "the model's output"
    return [make_finding(
        "shape-broadcast", NAME, where,
        f"The loss compares {of}, shape {tuple(output.shape)}, with targets of shape {tuple(target.shape)}: "
        f"they broadcast to {result}, {math.prod(result):,} pairs instead of {max(output.numel(), target.numel()):,}, "
        "so each output is compared with other samples' targets.",
        {"output_shape": list(output.shape), "target_shape": list(target.shape), "broadcast_shape": list(result),
         "pytorch_warning": seen.broadcast_warning})]


def loss_task_mismatch(session: Session, kind: str, output: torch.Tensor, targets: list,
                       trace: probe.ForwardTrace) -> list:
    name = type(session.criterion).__name__ if isinstance(session.criterion, nn.Module) else \
        getattr(session.criterion, "__name__", "the criterion")
    chosen = " (chosen by nndoctor)" if session.setup.criterion is None else ""
    if not targets:
        return []
    units = output.shape[-1] if output.dim() >= 2 else 1
    evidence = {"criterion": name, "criterion_chosen": bool(chosen), "output_shape": list(output.shape),
                "target_shape": list(targets[0].shape), "target_dtype": str(targets[0].dtype).replace("torch.", "")}
    if kind == "regression":
        if all(t.shape == output.shape and t.is_floating_point() and _one_hot(t) for t in targets):
            return [make_finding(
                "loss-task-mismatch", NAME, None,
                f"{name}{chosen}, a regression loss, is given one-hot class targets ({units} classes, every row "
                "a single 1): a classification task, which CrossEntropyLoss on the raw logits trains properly.",
                {**evidence, "targets": "one-hot", "classes": units})]
        index_layout = all(tuple(t.reshape(t.shape[0], -1).shape if t.dim() == 2 and t.shape[-1] == 1 else t.shape)
                           in (tuple(output.shape[:-1]), tuple(output.shape[:-1]) + (1,)) for t in targets)
        if units >= 2 and output.dim() >= 2 and index_layout:
            values = torch.cat([t.detach().reshape(-1).double() for t in targets])
            if values.numel() and bool((values == values.round()).all()) and values.min() >= 0 \
                    and values.max() < units:
                return [make_finding(
                    "loss-task-mismatch", NAME, None,
                    f"{name}{chosen}, a regression loss, compares a {units}-unit output with class indices "
                    f"(integers {int(values.min())}–{int(values.max())}, one per sample): a classification task, "
                    "which needs CrossEntropyLoss on the logits.",
                    {**evidence, "targets": "class indices", "classes": units,
                     "min_label": int(values.min()), "max_label": int(values.max())})]
        if units == 1:
            return _labels_as_numbers(name, chosen, evidence, targets)
        return []
    floats = [t for t in targets if t.is_floating_point()]
    if not floats:
        return []
    values = torch.cat([t.detach().reshape(-1).double() for t in floats])
    values = values[torch.isfinite(values)]
    if not values.numel():
        return []
    probabilities = all(t.shape == output.shape and bool(((t >= 0) & (t <= 1)).all())
                        and bool(((t.sum(1) - 1).abs() <= 1e-3).all()) for t in floats if t.dim() >= 2)
    if probabilities and all(t.dim() >= 2 for t in floats):
        return []  # class probabilities (soft labels): what CrossEntropyLoss accepts as float targets
    integral = bool((values == values.round()).all())
    return [make_finding(
        "loss-task-mismatch", NAME, None,
        f"{name}{chosen}, a classification loss, is given {'integer-valued ' if integral else 'continuous '}float "
        f"targets (from {values.min().item():.4g} to {values.max().item():.4g}, not class indices nor rows of "
        "class probabilities): a regression task needs MSELoss/L1Loss; class labels need .long().",
        {**evidence, "targets": "continuous", "min": values.min().item(), "max": values.max().item()})]


def _labels_as_numbers(name: str, chosen: str, evidence: dict, targets: list) -> list:
    """One output regressed onto a few consecutive, evenly used integers: class labels read as
    numbers (a warning: ordinal scores such as ratings are regressed so on purpose)."""
    values = torch.cat([t.detach().reshape(-1).double() for t in targets])
    values = values[torch.isfinite(values)]
    if values.numel() < MIN_LABEL_SAMPLES or not bool((values == values.round()).all()):
        return []
    distinct, counts = torch.unique(values, return_counts=True)
    k = distinct.numel()
    low, high = int(distinct[0]), int(distinct[-1])
    if not (MIN_CLASSES <= k <= MAX_CLASSES_AS_NUMBERS) or low not in (0, 1) or high - low + 1 != k:
        return []
    shares = counts.double() / values.numel()
    if shares.min().item() < MIN_CLASS_SHARE / k:
        return []  # a decaying spread (counts): not a labelled set of classes
    return [make_finding(
        "loss-task-mismatch", NAME, None,
        f"{name}{chosen}, a regression loss, fits one output to {k} integer labels {low}–{high}, each "
        f"{shares.min().item():.0%}–{shares.max().item():.0%} of the {values.numel():,} targets: if they are "
        "classes, the model averages neighbouring ones; use {k} logits and CrossEntropyLoss.".replace("{k}", str(k)),
        {**evidence, "targets": "integer labels", "classes": k, "min_label": low, "max_label": high,
         "shares": [round(v, 4) for v in shares.tolist()]}, severity="warning")]


def output_range_mismatch(model: nn.Module, output: torch.Tensor, values: torch.Tensor,
                          trace: probe.ForwardTrace, metrics: dict) -> list:
    origin = probe.origin_node(output) if output.grad_fn is not None else None
    if origin is None:
        return []
    where = trace.producer(output)
    entry = OUTPUT_RANGES.get(type(origin).__name__)
    if entry is None and type(origin).__name__ == "HardtanhBackward0":
        module = dict(model.named_modules()).get(where or "")
        if isinstance(module, nn.Hardtanh):
            entry = (type(module).__name__, float(module.min_val), float(module.max_val))
    if entry is None:
        return []
    name, low, high = entry
    tol = 1e-6 * max(1.0, values.abs().max().item())
    outside = ((values < low - tol) | (values > high + tol))
    share = outside.double().mean().item()
    metrics["targets_outside_output_range"] = round(share, 4)
    if share < OUT_OF_RANGE_SHARE:
        return []
    bounds = f"[{low:g}, {high:g}]".replace("inf", "∞")
    by = f"`{where}`" if where else "the model's forward"
    return [make_finding(
        "output-range-mismatch", NAME, where,
        f"The output ends in a {name} applied by {by}, bounded to {bounds}, but {share:.0%} of the regression "
        f"targets ({int(outside.sum()):,} of {values.numel():,}, from {values.min().item():.4g} to "
        f"{values.max().item():.4g}) lie outside it: the model can never reach them.",
        {"activation": name, "low": low, "high": high, "outside": int(outside.sum()), "targets": values.numel(),
         "share": share, "target_min": values.min().item(), "target_max": values.max().item(),
         "threshold": OUT_OF_RANGE_SHARE})]


def unscaled_targets(values: torch.Tensor, limit: float, batches: int, metrics: dict) -> list:
    mean, std = values.mean().item(), values.std().item() if values.numel() > 1 else 0.0
    rms = values.square().mean().sqrt().item()
    metrics["target_rms"] = rms
    if not rms > limit:
        return []
    return [make_finding(
        "unscaled-targets", NAME, "train_loader",
        f"The regression targets range from {values.min().item():.4g} to {values.max().item():.4g} with mean "
        f"{mean:.4g} and std {std:.4g} (RMS {rms:.4g}, over {limit:g}x unit scale) in {batches} scanned batches.",
        {"mean": mean, "std": std, "rms": rms, "min": values.min().item(), "max": values.max().item(),
         "max_rms": limit, "batches_scanned": batches})]
