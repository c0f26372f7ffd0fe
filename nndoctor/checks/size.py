"""size: parameters, parameter memory and mult-adds, on torchinfo (SPEC §2, §4)."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn

from ..engine import Session, Skip
from ..findings import make_finding
from . import Outcome

NAME = "size"
DEFAULTS = {
    "input": None,  # input shape, e.g. [1, 3, 224, 224]; default: example_input, else the first batch
    "max_params": None,  # budgets: exceeding one is `model-too-large`
    "max_mb": None,
    "max_flops": None,
    "depth": 0,  # > 0: per-module breakdown down to this depth
}


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
        x = torch.zeros(shape, dtype=dtype, device=device) if dtype == torch.long \
            else torch.randn(shape, device=device)
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
    # mode="eval": torchinfo's train-mode pass would move BatchNorm running stats
    # (the Session restores them anyway, but eval keeps the pass side-effect free).
    with torch.no_grad():
        return torchinfo.summary(session.model, input_data=input_data, device=session.device,
                                 mode="eval", verbose=0, depth=8)


def run(session: Session, settings: dict) -> Outcome:
    args, kwargs, input_size = model_input(session, settings.get("input"))
    stats = summarize_model(session, args, kwargs)
    direct_total = sum(p.numel() for p in session.model.parameters())
    direct_trainable = sum(p.numel() for p in session.model.parameters() if p.requires_grad)
    size = {
        "total_params": int(stats.total_params),
        "trainable_params": int(stats.trainable_params),
        "param_mb": round(stats.to_megabytes(stats.total_param_bytes), 4),
        "mult_adds": int(stats.total_mult_adds),
        "input_size": input_size,
    }
    outcome = Outcome(metrics={k: size[k] for k in ("total_params", "trainable_params", "param_mb",
                                                     "mult_adds")})
    if size["total_params"] != direct_total:
        # torchinfo counts only the modules the forward pass ran; an unused layer's
        # parameters still take memory, so the direct count is the truth.
        param_bytes = sum(p.numel() * p.element_size() for p in session.model.parameters())
        outcome.metrics["torchinfo_total_params"] = size["total_params"]
        size.update(total_params=direct_total, trainable_params=direct_trainable,
                    param_mb=round(param_bytes / 1e6, 4))
        outcome.metrics.update(total_params=direct_total, trainable_params=direct_trainable,
                               param_mb=size["param_mb"])
    outcome.sections["size"] = size
    outcome.findings += budget_findings(size, settings)
    return outcome


def budget_findings(size: dict, settings: dict) -> list:
    findings = []
    budgets = [("max_params", "total_params", "parameters", _count),
               ("max_mb", "param_mb", "MB of parameters", lambda v: f"{v:.2f}"),
               ("max_flops", "flops", "FLOPs per forward pass", _count)]
    for key, measured_key, unit, fmt in budgets:
        limit: Optional[float] = settings.get(key)
        measured = size.get(measured_key)
        if limit is None or measured is None or measured <= limit:
            continue
        findings.append(make_finding(
            "model-too-large", NAME, None,
            f"The model has {fmt(measured)} {unit}, over the budget of {fmt(limit)} ({key}).",
            {measured_key: measured, key: limit, "ratio": round(measured / limit, 3)}))
    return findings


def _count(n: float) -> str:
    """1234567 -> '1.23M' (units people read)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}"
