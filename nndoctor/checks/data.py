"""data: the training batches themselves, before any training (SPEC §3).

Scans the first `batches` training batches (the engine caches them, so the
other checks read the same ones):

* `data-non-finite`: NaN/Inf in the inputs or the targets, counted per tensor.
* `label-out-of-range`: integer class targets outside `[0, C)` for a
  CrossEntropyLoss/NLLLoss, C read from the model's output (class dimension 1,
  as those losses take it); float targets outside [0, 1] for a BCELoss/
  BCEWithLogitsLoss. Found here, before the loss crashes on them.
* `unnormalized-input`: float inputs far from unit scale (e.g. raw 0–255 pixels).
  Integer inputs (token ids) are not features and are not judged.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..engine.runner import FORWARD_FAILED
from ..engine.session import LABEL_KEYS, Batch, Session, criterion_kind
from ..errors import summarize
from ..probes.forward import NORMALIZING_LAYERS, forward_record
from ..report.findings import make_finding
from ..report.numbers import plural, sig
from . import Outcome

NAME = "data"

SCAN_BATCHES = 8  # 8 batches (256 samples at batch 32): a NaN in 1% of the samples is seen with
#                   probability 1 - 0.99**256 ≈ 92%; the other checks reuse the cached batches.
RMS_LIMIT = 10.0  # LeCun et al. (1998), "Efficient BackProp" §4.3: inputs should have zero mean
#   and comparable, ~unit variance. We judge the root-mean-square sqrt(mean(x²)), which folds the
#   mean and the spread together: standardised data, [0, 1] (ToTensor), [-1, 1] (audio) and
#   one-hot/binary features all have RMS <= ~1; raw 0-255 pixels ~100. Ten times the unit scale
#   is where default init (sized for unit-variance inputs) gets pre-activations 10x too large.
MAX_CHANNELS_IN_EVIDENCE = 16  # per-channel means/stds (the Normalize(mean, std) to use) up to 16

DEFAULTS = {
    "batches": SCAN_BATCHES,  # training batches scanned
    "max_rms": RMS_LIMIT,  # unnormalized-input: input RMS (per tensor, or per channel) above this
}


def run(session: Session, settings: dict) -> Outcome:
    count = int(settings.get("batches", SCAN_BATCHES))
    if count < 1:
        raise ValueError(f"data.batches must be at least 1, not {count}")
    batches = session.batches(count)
    outcome = Outcome(metrics={"batches_scanned": len(batches),
                               "samples_scanned": sum(b.batch_size or 0 for b in batches)})
    outcome.findings += non_finite_findings(batches, outcome.metrics)
    outcome.findings += unnormalized_findings(session, batches, float(settings.get("max_rms", RMS_LIMIT)),
                                              outcome.metrics)
    outcome.findings += label_findings(session, batches, outcome.metrics)
    labels = outcome.metrics.get("labels")
    if isinstance(labels, str) and labels.startswith(f"not checked: {FORWARD_FAILED}"):
        outcome.metrics["not_checked"] = {"label-out-of-range": labels[len("not checked: "):]}
    return outcome


# --------------------------------------------------------------------------- tensors of a batch

def input_tensors(batch: Batch) -> list:
    """[(name, tensor)] of the model's inputs: `inputs`, `inputs[1]`, `inputs['pixel_values']`."""
    named = []
    tensors = [a for a in batch.args if isinstance(a, torch.Tensor)]
    for i, t in enumerate(tensors):
        named.append(("inputs" if len(tensors) == 1 and not batch.kwargs else f"inputs[{i}]", t))
    for key, value in batch.kwargs.items():
        if isinstance(value, torch.Tensor) and key not in LABEL_KEYS:
            named.append((f"inputs[{key!r}]", value))
    return named


def target_tensor(batch: Batch) -> Optional[torch.Tensor]:
    if isinstance(batch.target, torch.Tensor):
        return batch.target
    return next((batch.kwargs[k] for k in LABEL_KEYS if isinstance(batch.kwargs.get(k), torch.Tensor)), None)


# --------------------------------------------------------------------------- data-non-finite

def non_finite_findings(batches: list, metrics: dict) -> list:
    counts: dict = {}  # name -> [nan, inf, batches] ; device counts read once below
    pending = []
    for index, batch in enumerate(batches):
        named = input_tensors(batch)
        target = target_tensor(batch)
        if target is not None:
            named.append(("targets", target))
        for name, t in named:
            if t.is_floating_point() or t.is_complex():
                pending.append((name, index, torch.isnan(t).sum(), torch.isinf(t).sum()))
    if not pending:
        return []
    values = torch.stack([torch.stack([n, i]) for _, _, n, i in pending]).tolist()  # one sync
    for (name, index, _, _), (nan, inf) in zip(pending, values):
        entry = counts.setdefault(name, {"nan": 0, "inf": 0, "batches": []})
        entry["nan"] += int(nan)
        entry["inf"] += int(inf)
        if nan or inf:
            entry["batches"].append(index)
    metrics["non_finite"] = {name: c["nan"] + c["inf"] for name, c in counts.items()}
    findings = []
    for name, c in counts.items():
        if not c["batches"]:
            continue
        total = c["nan"] + c["inf"]
        findings.append(make_finding(
            "data-non-finite", NAME, None,
            f"The {name} hold {plural(total, 'non-finite value')} "
            f"({c['nan']} NaN, {c['inf']} Inf) in "
            f"{len(c['batches'])} of {len(batches)} scanned batches, first in batch {c['batches'][0]}.",
            {"tensor": name, "values": total, "nan": c["nan"], "inf": c["inf"],
             "batches": c["batches"], "first_batch": c["batches"][0], "batches_scanned": len(batches)}))
    return findings


# --------------------------------------------------------------------------- unnormalized-input

def unnormalized_findings(session: Session, batches: list, max_rms: float, metrics: dict) -> list:
    names = [name for name, t in input_tensors(batches[0]) if t.is_floating_point()]
    if not names:
        metrics["input_scale"] = "no float inputs (token ids or other integers are not judged)"
        return []
    stats = {}
    for name in names:
        tensors = [dict(input_tensors(b)).get(name) for b in batches]
        tensors = [t for t in tensors if t is not None and t.is_floating_point()]
        stats[name] = _scale_stats(tensors)
    metrics["input_scale"] = {n: {k: s[k] for k in ("mean", "std", "rms", "min", "max")} for n, s in stats.items()}
    findings = []
    for name, s in stats.items():
        worst = max(s["channel_rms"]) if s["channel_rms"] else s["rms"]
        if not (max(s["rms"], worst) > max_rms):  # NaN-safe: non-finite data is reported above
            continue
        normaliser = _normalised_by_model(session, name)
        if normaliser:
            metrics.setdefault("normalised_in_model", {})[name] = normaliser
            continue
        evidence = {"tensor": name, **{k: s[k] for k in ("mean", "std", "rms", "min", "max")},
                    "max_rms": max_rms, "batches_scanned": len(batches)}
        channel_note = ""
        if s["channel_rms"]:
            over = [i for i, r in enumerate(s["channel_rms"]) if r > max_rms]
            evidence.update(channels_over=len(over), channels=len(s["channel_rms"]),
                            worst_channel=max(range(len(s["channel_rms"])), key=s["channel_rms"].__getitem__))
            if len(s["channel_rms"]) <= MAX_CHANNELS_IN_EVIDENCE:
                evidence.update(channel_mean=s["channel_mean"], channel_std=s["channel_std"])
            if 0 < len(over) < len(s["channel_rms"]):
                channel_note = (f"; {len(over)} of {len(s['channel_rms'])} features along dim 1 exceed it "
                                f"(worst: {evidence['worst_channel']}, RMS {worst:.3g})")
        findings.append(make_finding(
            "unnormalized-input", NAME, None,
            f"The {name} range from {s['min']:.4g} to {s['max']:.4g} with mean {s['mean']:.4g} and std "
            f"{s['std']:.4g} (RMS {s['rms']:.4g}, over {max_rms:g}x unit scale){channel_note}.",
            evidence))
    return findings


def _scale_stats(tensors: list) -> dict:
    """Mean, std, RMS, min, max of the finite values (NaN/Inf are data-non-finite's); the same per
    slice of dim 1 (image channels, tabular features) too. Accumulated batch by batch in float64
    on the device (no copy of the whole scan), read with one sync."""
    per_channel = all(t.dim() >= 2 for t in tensors) and len({t.shape[1] for t in tensors}) == 1
    channels = tensors[0].shape[1] if per_channel else 1
    device = tensors[0].device
    count = torch.zeros(channels, dtype=torch.float64, device=device)
    total, squares = torch.zeros_like(count), torch.zeros_like(count)
    low = torch.full((), math.inf, dtype=torch.float64, device=device)
    high = torch.full((), -math.inf, dtype=torch.float64, device=device)
    for t in tensors:
        values = t.detach().to(torch.float64)
        values = values.transpose(0, 1).reshape(channels, -1) if per_channel else values.reshape(1, -1)
        finite = torch.isfinite(values)
        zeroed = torch.where(finite, values, torch.zeros_like(values))
        count += finite.sum(1)
        total += zeroed.sum(1)
        squares += zeroed.square().sum(1)
        low = torch.minimum(low, torch.where(finite, values, torch.full_like(values, math.inf)).min())
        high = torch.maximum(high, torch.where(finite, values, torch.full_like(values, -math.inf)).max())
    n, sum_, sq = count.sum(), total.sum(), squares.sum()
    overall = torch.stack([n, sum_ / n, sq / n, low, high])
    channel = torch.stack([total / count.clamp(min=1), squares / count.clamp(min=1), count])
    (n, mean, square, low, high), (c_mean, c_square, c_count) = overall.tolist(), channel.tolist()  # one sync
    if n == 0:
        nan = math.nan
        return {"mean": nan, "std": nan, "rms": nan, "min": nan, "max": nan,
                "channel_rms": [], "channel_mean": [], "channel_std": []}
    out = {"mean": sig(mean, 6), "std": sig(_std(mean, square, n), 6), "rms": sig(math.sqrt(square), 6),
           "min": sig(low, 6), "max": sig(high, 6), "channel_rms": [], "channel_mean": [], "channel_std": []}
    if per_channel:
        out["channel_rms"] = [math.sqrt(v) for v in c_square]
        out["channel_mean"] = [sig(v, 6) for v in c_mean]
        out["channel_std"] = [sig(_std(m, q, k), 6) for m, q, k in zip(c_mean, c_square, c_count)]
    return out


def _std(mean: float, mean_square: float, n: float) -> float:
    """The sample standard deviation (as torch.std) from E[x] and E[x²] over n values."""
    if n < 2:
        return 0.0
    return math.sqrt(max(mean_square - mean * mean, 0.0) * n / (n - 1))


def _normalised_by_model(session: Session, name: str) -> Optional[str]:
    """The path of the normalisation layer(s) the model applies first to this raw input, if only those read it."""
    if name != "inputs" and name != "inputs[0]":
        return None
    try:
        readers = forward_record(session).input_readers
    except Exception:  # the model's forward raised: the init check reports it
        return None
    if readers and all(isinstance(m, NORMALIZING_LAYERS) for _, m in readers):  # e.g. BatchNorm1d first
        return ", ".join(p for p, _ in readers)
    return None


# --------------------------------------------------------------------------- label-out-of-range

def label_findings(session: Session, batches: list, metrics: dict) -> list:
    target = target_tensor(batches[0])
    if target is not None and target.is_floating_point() and not session.uses_model_loss \
            and criterion_kind(session.criterion) in ("bce", "bce_logits"):
        return probability_target_findings(session, batches, metrics)
    if target is None or target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        metrics["labels"] = "not checked: no integer class targets"
        return []
    if session.uses_model_loss:
        metrics["labels"] = "not checked: the loss comes from the model or a loss_fn"
        return []
    kind = criterion_kind(session.criterion)
    if kind not in ("cross_entropy", "nll"):
        metrics["labels"] = "not checked: the criterion is not CrossEntropyLoss/NLLLoss"
        return []
    try:
        record = forward_record(session)
    except Exception as exc:  # the model's forward raised: the init check reports it as an error
        metrics["labels"] = f"not checked: {FORWARD_FAILED} {summarize(exc)}"
        return []
    logits = record.logits
    if logits is None or logits.dim() == 0:
        metrics["labels"] = "not checked: the output is not a tensor of class scores"
        return []
    # CrossEntropyLoss/NLLLoss take (N, C, d1, ...) outputs with (N, d1, ...) targets, or (C,) with ().
    batched = logits.dim() >= 2 and target.dim() == logits.dim() - 1 and target.shape[0] == logits.shape[0] \
        and tuple(target.shape[1:]) == tuple(logits.shape[2:])
    if not (batched or (logits.dim() == 1 and target.dim() == 0)):
        metrics["labels"] = (f"not checked: output {tuple(logits.shape)} and targets {tuple(target.shape)} "
                             "do not match the criterion's (N, C, ...) / (N, ...) shapes")
        return []
    classes = logits.shape[1] if batched else logits.shape[0]
    ignore = getattr(session.criterion, "ignore_index", -100)
    parts = []
    for b in batches:
        t = target_tensor(b)
        if t is None:
            continue
        t = t.reshape(-1)
        kept = t[t != ignore]
        bad = (kept < 0) | (kept >= classes)
        parts.append(torch.stack([bad.sum(), kept.min() if kept.numel() else t.new_zeros(()),
                                  kept.max() if kept.numel() else t.new_zeros(()), kept.new_tensor(kept.numel())]))
    values = torch.stack(parts).tolist()  # one sync
    out_of_range = [int(v[0]) for v in values]
    low = min(int(v[1]) for v in values if v[3])
    high = max(int(v[2]) for v in values if v[3])
    total = sum(int(v[3]) for v in values)
    metrics["labels"] = {"min": low, "max": high, "classes": classes}
    bad_batches = [i for i, n in enumerate(out_of_range) if n]
    if not bad_batches:
        return []
    count = sum(out_of_range)
    where = record.score_layer  # the layer whose width is the class count, not a LogSoftmax after it
    return [make_finding(
        "label-out-of-range", NAME, where,
        f"{count} of {total} class targets in {len(bad_batches)} of {len(batches)} scanned batches lie "
        f"outside [0, {classes}) (labels range from {low} to {high}), but the output"
        f"{f' `{where}`' if where else ''} has {classes} classes.",
        {"out_of_range": count, "labels": total, "min_label": low, "max_label": high, "classes": classes,
         "batches": bad_batches, "first_batch": bad_batches[0], "batches_scanned": len(batches)})]


def probability_target_findings(session: Session, batches: list, metrics: dict) -> list:
    """label-out-of-range for BCELoss/BCEWithLogitsLoss targets outside [0, 1]: BCELoss raises on
    them, BCEWithLogitsLoss silently computes a loss that can go below 0. NaN targets are
    data-non-finite's."""
    parts = []
    for b in batches:
        t = target_tensor(b)
        if t is None or not t.is_floating_point():
            continue
        t = t.detach().reshape(-1)
        finite = t[torch.isfinite(t)]
        empty = finite.numel() == 0
        parts.append(torch.stack([((finite < 0) | (finite > 1)).sum().to(torch.float64),
                                  t.new_zeros(()).double() if empty else finite.min().double(),
                                  t.new_zeros(()).double() if empty else finite.max().double(),
                                  torch.tensor(float(finite.numel()), dtype=torch.float64, device=t.device)]))
    if not parts:
        metrics["labels"] = "not checked: no float targets"
        return []
    values = torch.stack(parts).tolist()  # one sync
    counted = [v for v in values if v[3]]
    if not counted:
        metrics["labels"] = "not checked: no finite targets"
        return []
    low, high = min(v[1] for v in counted), max(v[2] for v in counted)
    total = int(sum(v[3] for v in values))
    metrics["labels"] = {"min": sig(low, 6), "max": sig(high, 6), "range": [0, 1]}
    bad_batches = [i for i, v in enumerate(values) if v[0]]
    if not bad_batches:
        return []
    count = int(sum(v[0] for v in values))
    name = type(session.criterion).__name__ if isinstance(session.criterion, torch.nn.Module) \
        else getattr(session.criterion, "__name__", "the criterion")
    try:
        where = forward_record(session).producer
    except Exception:  # the model's forward raised: the init check reports it
        where = None
    return [make_finding(
        "label-out-of-range", NAME, where,
        f"{count} of {total} targets in {len(bad_batches)} of {len(batches)} scanned batches lie outside "
        f"[0, 1] (targets range from {low:.4g} to {high:.4g}), but {name} takes probabilities as targets.",
        {"out_of_range": count, "labels": total, "min_label": sig(low, 6), "max_label": sig(high, 6),
         "range": [0, 1], "criterion": name, "batches": bad_batches, "first_batch": bad_batches[0],
         "batches_scanned": len(batches)})]
