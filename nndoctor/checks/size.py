"""size: parameters, parameter memory, mult-adds (torchinfo) and FLOPs (FlopCounterMode) (SPEC §2, §4).

torchinfo counts mult-adds through module hooks from each layer's parameters
and output size, so it misses functional calls (attention matmuls), counts a
Linear over a sequence once per sample instead of once per token, and leaves
out MultiheadAttention. `flops` comes from one eval-mode forward pass under
torch's FlopCounterMode (nndoctor.probes.flops); when the two disagree by more than
2×, an info finding says which to trust and names the modules behind the gap.
The check runs exactly two forward passes, both in eval mode under no_grad,
so BatchNorm statistics never move.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..config import parse_budget
from ..engine.session import Session, Skip
from ..errors import summarize
from ..report.findings import make_finding
from ..report.numbers import human_count
from . import Outcome

NAME = "size"
DEFAULTS = {
    "input": None,  # input shape, e.g. [1, 3, 224, 224]; default: example_input, else the first batch
    "max_params": None,  # budgets: exceeding one is `model-too-large`
    "max_mb": None,
    "max_flops": None,
    "depth": 0,  # > 0: per-module breakdown (params, FLOPs) down to this depth
}

# flops and 2 × mult_adds (both FLOPs) further apart than this -> `flops-undercounted`.
# torchinfo's formula is within ~1% on MLPs and CNNs (bias and BatchNorm terms);
# 2× is far outside that and well inside what it misses on attention and LSTMs (SPEC §4, issue 7).
DISAGREE_RATIO = 2.0
# A module type whose FLOPs torchinfo misses is named when it holds at least this share of the gap.
MISSED_SHARE = 0.05
MISSED_NAMED = 3  # at most this many module types in the message (all in evidence)


def parse_shape(value: Any) -> list:
    """`"1,3,224,224"`, `"1x3x224x224"` or `[1, 3, 224, 224]` -> [1, 3, 224, 224]."""
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").replace(" ", "").split(",") if p]
        try:
            shape = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"--input must be a shape such as 1,3,224,224, not {value!r}") from None
    else:
        shape = list(value)
    if not shape or any(not isinstance(d, int) or d <= 0 for d in shape):
        raise ValueError(f"--input must be a shape of positive integers, not {value!r}")
    return shape


def model_input(session: Session, shape_setting: Any) -> tuple:
    """(args, kwargs, input_size) of the forward pass to measure, on the session's device."""
    device = session.device
    if shape_setting is not None:
        shape = parse_shape(shape_setting)
        dtype = torch.long if _starts_with_embedding(session.model) else torch.float32
        # A private generator: sizing never draws from the user's global RNG.
        generator = torch.Generator().manual_seed(session.seed)
        x = torch.zeros(shape, dtype=dtype) if dtype == torch.long \
            else torch.randn(shape, generator=generator)
        x = x.to(device)
        return (x,), {}, shape
    example = session.setup.example_input
    if example is not None:
        if isinstance(example, (list, tuple)) and example and all(isinstance(d, int) for d in example):
            return model_input(session, list(example))
        args = tuple(example) if isinstance(example, (tuple, list)) else (example,)
        args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
        return args, {}, _sizes(args)
    if not session.has_data:
        raise Skip("no input to measure: pass --input 1,3,224,224, give example_input, or a train_loader")
    batch = session.first_batch
    sizes = _sizes(batch.args) if batch.args else {k: list(v.shape) for k, v in batch.kwargs.items()
                                                    if isinstance(v, torch.Tensor)}
    return batch.args, batch.kwargs, sizes


def _sizes(args) -> Any:
    shapes = [list(a.shape) for a in args if isinstance(a, torch.Tensor)]
    return shapes[0] if len(shapes) == 1 else shapes


def _starts_with_embedding(model: nn.Module) -> bool:
    for m in model.modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
            return True
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase)):
            return False
    return False


def summarize_model(session: Session, args: tuple, kwargs: dict):
    import torchinfo  # lazy: ~0.1 s we pay only when sizing

    input_data = kwargs if kwargs else list(args)
    # mode="eval": a train-mode pass would move BatchNorm running stats. torchinfo
    # restores only the root's mode (model.train(saved)); run() restores every module's.
    with torch.no_grad():
        return torchinfo.summary(session.model, input_data=input_data, device=session.device,
                                 mode="eval", verbose=0, depth=8)


def run(session: Session, settings: dict) -> Outcome:
    model = session.model
    args, kwargs, input_size = model_input(session, settings.get("input"))
    modes = [(m, m.training) for m in model.modules()]
    try:
        try:
            stats = summarize_model(session, args, kwargs)
        except Exception as exc:  # noqa: BLE001 - the flop count's own forward pass tells why
            stats, torchinfo_error = None, exc
        try:
            flop_count = count_flops(model, args, kwargs)
        except Exception as exc:
            if session.setup.loss_fn is not None and settings.get("input") is None \
                    and session.setup.example_input is None:
                # loss_fn takes the whole batch: how the model is called is not ours to guess
                raise Skip("loss_fn takes the batch, so the model's input is unknown: give "
                           "example_input in the target or --input (e.g. 1,3,224,224)") from exc
            raise
    finally:
        for module, mode in modes:
            module.training = mode
    direct_total = sum(p.numel() for p in model.parameters())
    direct_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # torchinfo 1.8 sums bytes only over the parameters its hooks saw as a layer's own: on
    # nn.MultiheadAttention it misses in_proj_weight (1.33 MB instead of 2.42 MB on the
    # transformer_encoder sample) though its count is right. Memory is measured directly.
    param_mb = round(sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6, 4)
    size = {"total_params": direct_total, "trainable_params": direct_trainable, "param_mb": param_mb,
            "mult_adds": None if stats is None else int(stats.total_mult_adds),
            "flops": flop_count.total, "input_size": input_size}
    outcome = Outcome(metrics={k: size[k] for k in ("total_params", "trainable_params", "param_mb",
                                                     "mult_adds", "flops")})
    if stats is None:
        # e.g. a forward returning an object torchinfo cannot walk (a plain class with .loss)
        outcome.metrics["torchinfo"] = f"failed: {summarize(torchinfo_error)}; counted directly"
    else:
        # torchinfo counts only the modules the forward pass ran; an unused layer's
        # parameters still take memory, so the direct count is the truth.
        if int(stats.total_params) != direct_total:
            outcome.metrics["torchinfo_total_params"] = int(stats.total_params)
        torchinfo_mb = round(stats.to_megabytes(stats.total_param_bytes), 4)
        if torchinfo_mb != param_mb:
            outcome.metrics["torchinfo_param_mb"] = torchinfo_mb
    depth = int(settings.get("depth") or 0)
    if depth > 0:
        size["layers"] = layer_breakdown(model, flop_count, depth)
    outcome.sections["size"] = size
    outcome.findings += budget_findings(size, settings)
    if stats is not None:
        outcome.findings += disagreement_findings(model, stats, flop_count)
    return outcome


def count_flops(model: nn.Module, args: tuple, kwargs: dict):
    from ..probes.flops import count_flops as count  # lazy: keeps torch.utils.flop_counter off the import path

    return count(model, args, kwargs)


# --------------------------------------------------------------------------- per-layer breakdown

def layer_breakdown(model: nn.Module, flop_count, depth: int) -> list:
    """Parameters and FLOPs (inclusive) of every module down to `depth`, the heaviest first."""
    rows = []
    for path, module in model.named_modules():
        if not path or path.count(".") + 1 > depth:
            continue
        params = sum(p.numel() for p in module.parameters())
        flops = flop_count.by_module.get(path)
        if flops is None:  # a container never called itself (ModuleList): what its members ran
            flops = sum(flop_count.by_module[p] for p in _counted_descendants(module, path, flop_count.ops))
        if params or flops:  # activations, dropout, pooling: nothing to show
            rows.append({"module": path, "type": type(module).__name__, "params": params, "flops": flops})
    rows.sort(key=lambda r: (-r["flops"], -r["params"], r["module"]))
    return rows


# --------------------------------------------------------------------------- findings

def budget_findings(size: dict, settings: dict) -> list:
    findings = []
    budgets = [("max_params", "total_params", "parameters", human_count),
               ("max_mb", "param_mb", "MB of parameters", lambda v: f"{v:.2f}"),
               ("max_flops", "flops", "FLOPs per forward pass", human_count)]
    for key, measured_key, unit, fmt in budgets:
        limit = parse_budget(settings.get(key), key)
        measured = size.get(measured_key)
        if limit is None or measured is None or measured <= limit:
            continue
        findings.append(make_finding(
            "model-too-large", NAME, None,
            f"The model has {fmt(measured)} {unit}, over the budget {key} = {fmt(limit)}.",
            {measured_key: measured, key: limit, "ratio": round(measured / limit, 3)}))
    return findings


def disagreement_findings(model: nn.Module, stats, flop_count) -> list:
    """`flops-undercounted` when flops and 2 × torchinfo's mult-adds are > DISAGREE_RATIO apart."""
    flops, torchinfo_flops = flop_count.total, 2 * int(stats.total_mult_adds)
    high, low = max(flops, torchinfo_flops), min(flops, torchinfo_flops)
    if high == 0 or high <= DISAGREE_RATIO * low:
        return []
    gaps = module_gaps(model, stats, flop_count)
    under = flops > torchinfo_flops
    # The module types behind the gap, in its direction: torchinfo low -> modules it missed.
    groups: dict = {}
    for path, (gap, module_type, ops) in gaps.items():
        gap = gap if under else -gap
        if gap <= 0:
            continue
        group = groups.setdefault(module_type, {"type": module_type, "modules": 0, "flops": 0,
                                                "ops": {}, "largest": path, "largest_flops": 0})
        group["modules"] += 1
        if gap > group["largest_flops"]:
            group["largest"], group["largest_flops"] = path, gap
        group["flops"] += gap
        for op, n in ops.items():
            group["ops"][op] = group["ops"].get(op, 0) + n
    total_gap = sum(g["flops"] for g in groups.values()) or 1
    missed = sorted(groups.values(), key=lambda g: -g["flops"])
    missed = [{k: v for k, v in g.items() if k != "largest_flops"}
              | {"ops": sorted(g["ops"], key=lambda op: -g["ops"][op])}
              for g in missed if g["flops"] >= MISSED_SHARE * total_gap]
    named = ", ".join(f"{human_count(g['flops'])} FLOPs in {g['type']} ×{g['modules']}"
                      + (f" ({', '.join(op.removeprefix('aten.') for op in g['ops'])})" if g["ops"] else "")
                      for g in missed[:MISSED_NAMED])
    ratio = high / low if low else float("inf")
    times = f"{ratio:.0f}×" if low else "∞×"
    if under:
        message = (f"FlopCounterMode counts {human_count(flops)} FLOPs per forward pass, {times} the "
                   f"{human_count(torchinfo_flops)} that torchinfo's {human_count(stats.total_mult_adds)} mult-adds "
                   f"imply; trust flops: torchinfo misses " + (named or "functional calls in forward") + ".")
    else:
        message = (f"torchinfo's {human_count(stats.total_mult_adds)} mult-adds imply {human_count(torchinfo_flops)} "
                   f"FLOPs, {times} the {human_count(flops)} FlopCounterMode counts; trust flops: torchinfo "
                   f"counts " + (named or "work in layers") + " that no matmul or convolution performs.")
    where = (missed[0]["largest"] or None) if missed else None  # "" is the model's own forward
    evidence = {"flops": flops, "torchinfo_flops": torchinfo_flops, "mult_adds": int(stats.total_mult_adds),
                "ratio": round(ratio, 2) if low else None, "modules": missed}
    return [make_finding("flops-undercounted", NAME, where, message, evidence)]


def module_gaps(model: nn.Module, stats, flop_count) -> dict:
    """Per module: (its own FLOPs − 2 × torchinfo's own mult-adds, its type, its own ops' FLOPs).

    "Own" excludes the children: functional calls in the module's forward for
    FLOPs; torchinfo counts mult-adds on leaf modules only.
    """
    paths = {id(m): name for name, m in model.named_modules()}
    torchinfo_macs: dict = {}
    for layer in stats.summary_list:
        path = paths.get(id(layer.module))
        if path is not None and layer.is_leaf_layer:
            torchinfo_macs[path] = torchinfo_macs.get(path, 0) + int(layer.macs)
    gaps = {}
    for path, module in model.named_modules():
        own_ops = dict(flop_count.ops.get(path, {}))
        for child in _counted_descendants(module, path, flop_count.ops):
            for op, n in flop_count.ops[child].items():
                own_ops[op] = own_ops.get(op, 0) - n
        own_ops = {op: n for op, n in own_ops.items() if n > 0}
        gap = sum(own_ops.values()) - 2 * torchinfo_macs.get(path, 0)
        if gap:
            gaps[path] = (gap, type(module).__name__, own_ops)
    return gaps


def _counted_descendants(module: nn.Module, path: str, ops: dict):
    """The nearest descendants that ran a forward pass: the children, looking through
    containers that were never called themselves (a ModuleList of layers)."""
    for name, child in module.named_children():
        child_path = f"{path}.{name}" if path else name
        if child_path in ops:
            yield child_path
        else:
            yield from _counted_descendants(child, child_path, ops)


