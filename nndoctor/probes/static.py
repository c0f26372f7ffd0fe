"""Observing the model, its output and its loss before any step, for the `static` check.

Measuring only, no thresholds: each function takes a model (and batches, a loss), leaves
the model's modes, gradients and the RNG as it found them, and removes its hooks in
`finally`. `checks/static.py` judges what these return.

* `trace_forward`: one eval-mode forward pass (autograd on) under a `tracer.Tracer`
  (module hooks and op interception): which functional calls ran inside which module (softmax over a
  dimension, dropout with `training=True`), which watched tensors and modules it used,
  and each module's output (to name the module that made the model's output).
* `eval_difference`: two eval-mode forward passes of one batch, compared.
* `unregistered`: layers and trainable tensors held in plain attributes, lists or dicts.
* `identical_rows` / `init_gradients`: weight matrices whose units are all the same, and
  their gradients at init.
* `criterion_trace`: the criterion on (output, target), with PyTorch's broadcast warning
  and the elementwise ops that combined the two.
* `dataset_targets`: targets of random samples of a loader's map-style dataset.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.session import primary_output, rng_state, set_rng_state, tensors_mb
from .tracer import Tracer, modes_kept, origin_node

_SOFTMAXES = {F.softmax: "softmax", F.log_softmax: "log_softmax", torch.softmax: "softmax",
              torch.log_softmax: "log_softmax", torch.Tensor.softmax: "softmax",
              torch.Tensor.log_softmax: "log_softmax"}
# F.dropout(input, p=0.5, training=True, inplace=False) and its siblings; torch.dropout(input, p, train).
_DROPOUTS = {F.dropout: "F.dropout", F.dropout1d: "F.dropout1d", F.dropout2d: "F.dropout2d",
             F.dropout3d: "F.dropout3d", F.alpha_dropout: "F.alpha_dropout",
             F.feature_alpha_dropout: "F.feature_alpha_dropout", torch.dropout: "torch.dropout"}
# Binary elementwise ops through which a hand-written loss compares output and target.
_ELEMENTWISE = {torch.sub, torch.Tensor.sub, torch.Tensor.__sub__, torch.Tensor.__rsub__,
                torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__,
                torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__,
                torch.div, torch.Tensor.div, torch.Tensor.__truediv__, torch.Tensor.__rtruediv__,
                F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss, torch.nn.functional.binary_cross_entropy,
                F.binary_cross_entropy_with_logits}


def _safe(fn, default):
    # __torch_function__ receives every tensor call, some with arguments we cannot hash or read:
    # an observation that fails is dropped, the user's call still runs.
    try:
        return fn()
    except Exception:
        return default


# --------------------------------------------------------------------------- the traced forward

@dataclass
class SoftmaxCall:
    kind: str  # softmax | log_softmax
    dim: int
    size: int  # the input's size along dim
    shape: tuple
    module: Optional[str]  # the module whose forward made the call ("" the root), None: an nn.Softmax path
    result: Optional[torch.Tensor]


@dataclass
class DropoutCall:
    function: str
    p: float
    module: str  # the module whose forward made the call ("" the root)


@dataclass
class ForwardTrace:
    output: Any  # the model's output (autograd on)
    outputs: list = field(default_factory=list)  # [(path, tensor)] in completion order
    softmaxes: list = field(default_factory=list)
    dropouts: list = field(default_factory=list)  # dropout calls with training on, in eval mode
    used_ids: set = field(default_factory=set)  # ids of watched tensors passed to a call
    called: set = field(default_factory=set)  # ids of watched modules whose forward ran

    def producer(self, tensor: torch.Tensor) -> Optional[str]:
        """The innermost module whose output is `tensor` or made its values (None: none, or the root)."""
        origin = origin_node(tensor) if tensor.grad_fn is not None else None
        for path, out in self.outputs:
            if out is tensor or (origin is not None and origin_node(out) is origin):
                return path or None
        return None


class _ForwardTracer(Tracer):
    """The traced forward: each module's output, and the softmax/dropout calls and watched
    tensors the ops used, with the module whose forward made each call."""

    def __init__(self, model: nn.Module, trace: ForwardTrace, watch_ids: set, training: Callable[[], bool]):
        super().__init__(model)
        self.trace, self.watch_ids, self.training = trace, watch_ids, training

    def on_exit(self, module, path, args, output):
        out = primary_output(output)
        if isinstance(out, torch.Tensor):
            self.trace.outputs.append((path, out))

    def before_call(self, func, args, kwargs):
        if self.watch_ids:
            for a in list(args) + list(kwargs.values()):
                for t in (a if isinstance(a, (list, tuple)) else (a,)):
                    if isinstance(t, torch.Tensor) and id(t) in self.watch_ids:
                        self.trace.used_ids.add(id(t))

    def on_call(self, func, args, kwargs, out, module_path):
        where = module_path if module_path is not None else ""
        kind = _safe(lambda: _SOFTMAXES.get(func), None)
        if kind is not None:
            _safe(lambda: self._softmax(kind, args, kwargs, out, where), None)
        name = _safe(lambda: _DROPOUTS.get(func), None)
        if name is not None:
            _safe(lambda: self._dropout(name, args, kwargs, where), None)
        elif func is F.scaled_dot_product_attention:
            p = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
            if p and not self.training():
                self.trace.dropouts.append(DropoutCall("F.scaled_dot_product_attention(dropout_p)", float(p), where))

    def _softmax(self, kind, args, kwargs, result, where):
        x = args[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if dim is None:  # torch's implicit choice (F._get_softmax_dim)
            dim = 0 if x.dim() in (0, 1, 3) else 1
        size = x.shape[dim] if x.dim() else 1
        self.trace.softmaxes.append(SoftmaxCall(kind, int(dim), int(size), tuple(x.shape), where,
                                                result if isinstance(result, torch.Tensor) else None))

    def _dropout(self, name, args, kwargs, where):
        if name == "torch.dropout":
            p, on = args[1], args[2]
        else:
            p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            on = kwargs.get("training", args[2] if len(args) > 2 else True)
        if on and p > 0 and not self.training():
            self.trace.dropouts.append(DropoutCall(name, float(p), where))


def trace_forward(model: nn.Module, call: Callable[[], Any], *, watch_tensors: Iterable = (),
                  watch_modules: Iterable = ()) -> ForwardTrace:
    """`call()` (the model's forward, or a loss_fn that calls it) once in eval mode with autograd
    on; `output` is what it returned. The model's modes are restored, its hooks removed."""
    trace = ForwardTrace(output=None)
    tracer = _ForwardTracer(model, trace, {id(t) for t in watch_tensors}, lambda: False)
    watched_modules = [m for m in watch_modules if id(m) not in tracer.paths]

    def called(module, inputs, output):
        trace.called.add(id(module))

    try:
        tracer.install()
        tracer.handles += [module.register_forward_hook(called) for module in watched_modules]
        with modes_kept(model), torch.enable_grad(), tracer:
            model.eval()
            trace.output = call()
    finally:
        tracer.remove()
    return trace


def eval_difference(model: nn.Module, call: Callable[[], Any]) -> tuple:
    """(max |difference|, max |output|) of two eval-mode, no-grad runs of `call()` (a forward pass
    of one batch). The global RNG is restored afterwards; it is not reset between them."""
    state = rng_state()
    try:
        with modes_kept(model), torch.no_grad():
            model.eval()
            first = primary_output(call())
            second = primary_output(call())
    finally:
        set_rng_state(state)
    if not (isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor)) \
            or first.shape != second.shape or not first.is_floating_point():
        return 0.0, 0.0
    a, b = first.float(), second.float()
    finite = torch.isfinite(a) & torch.isfinite(b)
    diff = torch.where(finite, (a - b).abs(), torch.zeros_like(a))
    return float(diff.max()) if diff.numel() else 0.0, float(a[finite].abs().max()) if finite.any() else 0.0


# --------------------------------------------------------------------------- unregistered layers and tensors

@dataclass
class Unregistered:
    path: str  # the attribute: "layers", "block.scale"
    items: list  # [(label, object)]: ("layers[0]", Linear), ("scale", tensor)
    missing: dict  # label -> its trainable values that are not in model.parameters()
    container: str  # "list", "tuple", "dict" or "attribute"


_TORCH_CONTAINERS = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"}


def unregistered(model: nn.Module) -> list:
    """Modules and trainable tensors reachable from some module's plain attributes (one list/
    tuple/dict level deep) whose parameters are not in `model.parameters()`. A reference to a
    registered module, or a tensor computed from registered parameters (old-style weight_norm
    sets `weight` so), is not one."""
    registered = {id(p) for p in model.parameters()}
    found = []
    for path, module in model.named_modules():
        for attr, value in vars(module).items():
            if attr in _TORCH_CONTAINERS or attr.startswith("__"):
                continue
            if isinstance(value, (list, tuple)):
                entries, container = [(f"{attr}[{i}]", v) for i, v in enumerate(value)], type(value).__name__
            elif isinstance(value, dict):
                entries, container = [(f"{attr}[{k!r}]", v) for k, v in value.items()], "dict"
            else:
                entries, container = [(attr, value)], "attribute"
            items, missing = [], {}
            for label, obj in entries:
                count = missing_parameters(obj, registered)
                if count:
                    items.append((label, obj))
                    missing[label] = count
            if items:
                found.append(Unregistered(f"{path}.{attr}" if path else attr, items, missing, container))
    return found


def missing_parameters(obj: Any, registered: set) -> int:
    if isinstance(obj, nn.Module):
        return sum(p.numel() for p in obj.parameters() if p.requires_grad and id(p) not in registered)
    if isinstance(obj, torch.Tensor) and obj.requires_grad and id(obj) not in registered:
        if obj.grad_fn is None:
            return obj.numel()
        leaves = _autograd_leaves(obj)
        return obj.numel() if any(id(v) not in registered for v in leaves) else 0
    return 0


def _autograd_leaves(t: torch.Tensor) -> list:
    leaves, seen, todo = [], set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves.append(variable)
        todo.extend(n for n, _ in node.next_functions)
    return leaves


# --------------------------------------------------------------------------- identical units

# Layers whose weight rows are units that see the same input (Linear, non-grouped Conv);
# embeddings (rows are tokens) and normalisation scales (1-D) are not.
UNIT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


def identical_rows(model: nn.Module, tolerance: float) -> list:
    """[(path, module, spread)] of trainable Linear/Conv layers with more than one unit whose
    weight rows (and biases) are all equal: spread = max |row - row 0| / max |weight| (0 when
    the weight is all zero)."""
    out = []
    for path, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, UNIT_LAYERS) or not isinstance(weight, torch.Tensor) \
                or not weight.requires_grad or weight.dim() < 2 or weight.shape[0] < 2:
            continue
        spread = _row_spread(weight)
        bias = getattr(module, "bias", None)
        if spread <= tolerance and (bias is None or _row_spread(bias.reshape(-1, 1)) <= tolerance):
            out.append((path, module, spread))
    return out


def _row_spread(t: torch.Tensor) -> float:
    with torch.no_grad():
        rows = t.detach().reshape(t.shape[0], -1).float()
        scale = rows.abs().max()
        if scale == 0:
            return 0.0
        return float((rows - rows[:1]).abs().max() / scale)


def _unit_params(module: nn.Module) -> list:
    bias = getattr(module, "bias", None)
    return [module.weight] + ([bias] if isinstance(bias, torch.Tensor) and bias.requires_grad else [])


def _grad_spread(module: nn.Module, grads: dict) -> Optional[float]:
    """How far the units' gradients (weight rows and biases) differ; None: no gradient at all."""
    weight = grads.get(id(module.weight))
    if weight is None:
        return None
    spread = _row_spread(weight)
    bias = getattr(module, "bias", None)
    bias_grad = grads.get(id(bias)) if isinstance(bias, torch.Tensor) else None
    return max(spread, _row_spread(bias_grad.reshape(-1, 1))) if bias_grad is not None else spread


# Size of the emulated step, relative to each parameter's largest value (absolute for an all-zero
# one): any size above round-off separates units that training would separate.
_STEP = 1e-2


def symmetric_layers(model: nn.Module, loss_of: Callable[[], torch.Tensor], candidates: list,
                     tolerance: float, rounds: int, max_copy_mb: float) -> list:
    """[(path, module, max |weight gradient|)] of the candidates (`identical_rows`) whose units
    get identical gradients, also after `rounds` emulated training steps of every parameter: a
    zero-initialised layer downstream (a zero-init head or residual branch) passes the same (zero)
    gradient to every unit at init only. The steps need a copy of the weights to restore; above
    `max_copy_mb` no step is taken and only identical non-zero gradients count."""
    params = [p for p in model.parameters() if p.requires_grad]
    can_step = tensors_mb(params) <= max_copy_mb
    saved = [p.detach().clone() for p in params] if can_step else None
    remaining = list(candidates)
    try:
        for round_ in range(rounds + 1):
            grads = init_gradients(model, loss_of, params)
            stuck = []
            for entry in remaining:
                spread = _grad_spread(entry[1], grads)
                if spread is not None and spread <= tolerance:  # None (no gradient): no-gradient's
                    stuck.append(entry)
            if not stuck or round_ == rounds or not can_step:
                return [(path, m, float(grads[id(m.weight)].abs().max())) for path, m, _ in stuck
                        if can_step or grads[id(m.weight)].abs().max() > 0]
            with torch.no_grad():
                for p in params:
                    g = grads.get(id(p))
                    if g is not None and g.abs().max() > 0:
                        p.sub_(g / g.abs().max() * _STEP * (float(p.abs().max()) or 1.0))
            remaining = stuck
        return []
    finally:
        if saved is not None:
            with torch.no_grad():
                for p, value in zip(params, saved):
                    p.copy_(value)


def init_gradients(model: nn.Module, loss_of: Callable[[], torch.Tensor], params: list) -> dict:
    """{id(param): its gradient} of one eval-mode backward of `loss_of()`; the model's
    gradients and modes are restored."""
    saved = {p: p.grad for p in model.parameters()}
    try:
        for p in saved:
            p.grad = None
        with modes_kept(model), torch.enable_grad():
            model.eval()
            loss = loss_of()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        return {id(p): g for p, g in zip(params, grads)}
    finally:
        for p, g in saved.items():
            p.grad = g


# --------------------------------------------------------------------------- the criterion

@dataclass
class CriterionTrace:
    broadcast_warning: Optional[str]  # PyTorch's "Using a target size ..." UserWarning
    broadcasts: list  # [(op, output shape, target shape, result shape)] output/target ops that broadcast
    error: Optional[str]  # what the criterion raised, if it did


class _PairWatcher(Tracer):
    """The binary elementwise ops that took the output and the target together, and broadcast."""

    def __init__(self, output: torch.Tensor, target: torch.Tensor, found: list):
        super().__init__()
        self.output, self.target, self.found = output, target, found

    def on_call(self, func, args, kwargs, out, module_path):
        if _safe(lambda: func in _ELEMENTWISE, False) and len(args) >= 2:
            a, b = args[0], args[1]
            if (a is self.output and b is self.target) or (a is self.target and b is self.output):
                shape = tuple(torch.broadcast_shapes(a.shape, b.shape))
                if shape != tuple(self.output.shape) or shape != tuple(self.target.shape):
                    self.found.append((getattr(func, "__name__", str(func)), tuple(self.output.shape),
                                       tuple(self.target.shape), shape))


def criterion_trace(criterion: Callable, output: torch.Tensor, target: torch.Tensor) -> CriterionTrace:
    found: list = []
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.no_grad(), _PairWatcher(output, target, found):
                criterion(output, target)
        except Exception as exc:  # the loss itself fails: another check reports it
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    message = next((str(w.message) for w in caught if "target size" in str(w.message)
                    and "broadcast" in str(w.message)), None)
    return CriterionTrace(message, found, error)


# --------------------------------------------------------------------------- the dataset

def dataset_targets(loader: Any, count: int, seed: int, label_keys: tuple) -> Optional[list]:
    """The targets of `count` random samples of a DataLoader's map-style dataset (without
    replacement), or None when the loader has no indexable dataset or its items have no target."""
    dataset = getattr(loader, "dataset", None)
    if dataset is None or isinstance(dataset, torch.utils.data.IterableDataset):
        return None
    try:
        size = len(dataset)
    except TypeError:
        return None
    if size == 0:
        return None
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(size, generator=generator)[:count].tolist()
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, tuple) and len(tensors) >= 2:  # TensorDataset: read the targets directly
        return [tensors[1][i] for i in indices]
    targets = []
    for i in indices:
        try:
            item = dataset[i]
        except Exception:  # a dataset that only its loader's sampler can index (or that fails): no reference
            return None
        if isinstance(item, (tuple, list)) and len(item) >= 2:
            targets.append(item[1])
        elif isinstance(item, dict):
            key = next((k for k in label_keys if k in item), None)
            if key is None:
                return None
            targets.append(item[key])
        else:
            return None
    return targets
