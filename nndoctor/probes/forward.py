"""The forward record `init` and `data` read, and the batch-mixing probe.

* `record_forward(model, batch, loss_fn)`: one train-mode forward pass of a batch under
  forward hooks: each module's output in completion order (to find the module and the
  op that made the model's output), the per-unit std over the batch of every weight
  layer's output and input in execution order (normalisation layers marked), and the
  leaf modules fed the raw input. No loss is computed.
* `BatchProbe` / `probe_batch`: in eval mode, the gradient of a few samples' outputs
  with respect to every sample's input, and where the samples mix.

Measuring only: the thresholds are the `init` check's (it passes the round-off
tolerance in). Every hook is removed and the modes are restored in `finally`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ..engine.session import Batch, Session, output_loss, primary_output
from .tracer import modes_kept, origin_node, through_shape_ops

# Layers whose output scale is set by their weights' init: the ones bad-init follows through depth.
WEIGHT_LAYERS = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
# Layers that reset the scale (BatchNorm, LayerNorm, ...): the init's scale cannot compound across them.
NORMALIZING_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                      nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm) \
    + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

_ACTIVATION_NODES = {"SoftmaxBackward0": "softmax", "LogSoftmaxBackward0": "log_softmax",
                     "SigmoidBackward0": "sigmoid"}
_ACTIVATION_MODULES = ((nn.Softmax, "softmax"), (nn.Softmax2d, "softmax"), (nn.LogSoftmax, "log_softmax"),
                       (nn.Sigmoid, "sigmoid"))


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
    # the innermost module whose output, through an activation and reshapes only, is the model's
    # output: the layer whose width is the number of classes (a Linear before a LogSoftmax module)
    score_layer: Optional[str] = None
    # path -> the positions a weight layer's weights are applied at per sample (tokens, pixels;
    # 1 after a global pooling or on a flat vector): its gradient sums over them
    positions: dict = field(default_factory=dict)


def forward_record(session: Session) -> ForwardRecord:
    """The recorded forward of the first batch, done once per run (the data check reads it too)."""
    return session.shared("init.forward_record",
                          lambda: record_forward(session.model, session.first_batch, session.setup.loss_fn))


def record_forward(model: nn.Module, batch: Batch, loss_fn: Optional[Callable] = None) -> ForwardRecord:
    """One train-mode forward pass of `batch` (`model(*batch.args, **batch.kwargs)`, or
    `loss_fn(model, batch.raw)` when the model is called inside the user's loss), recorded.
    The model's modes are restored and its hooks removed afterwards."""
    paths: dict = {}
    for name, module in model.named_modules():
        paths.setdefault(module, name)
    calls: list = []  # (path, module, output tensor) in completion order (children before parents)
    readers: list = []
    raw_inputs = batch.inputs
    seen_weight_layers: set = set()
    signal: list = []
    input_signal: dict = {}  # path -> the per-unit std over the batch of a weight layer's input
    positions: dict = {}  # path -> positions per sample of a weight layer's output

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
            channels = tensor.shape[-1] if isinstance(module, (nn.Linear, nn.Bilinear)) else tensor.shape[1]
            positions[path] = tensor[0].numel() // max(int(channels), 1)
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            if x is not None and x.is_floating_point() and x.dim() >= 2 and x.shape[0] == tensor.shape[0]:
                input_signal[path] = x.detach().float().std(dim=0).mean()

    handles = [m.register_forward_hook(hook) for m in paths]
    try:
        with modes_kept(model), torch.enable_grad():
            model.train()
            if loss_fn is not None:
                loss_fn(model, batch.raw)
                output = None
            else:
                output = model(*batch.args, **batch.kwargs)
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
    record.positions = positions
    logits = primary_output(output) if output is not None else None
    if isinstance(logits, torch.Tensor):
        record.logits = logits.detach()
        record.final_activation, record.activation_where, record.producer = _output_origin(logits, calls)
        record.score_layer = _score_layer(logits, calls) or record.producer
    return record


def _as_tensor(output: Any) -> Optional[torch.Tensor]:
    out = primary_output(output)
    return out if isinstance(out, torch.Tensor) else None


def _output_origin(logits: torch.Tensor, calls: list) -> tuple:
    """(final activation, the module that applied it, the innermost module producing the output)."""
    origin = origin_node(logits)
    producer = None
    for path, module, out in calls:  # completion order: the innermost module comes first
        if out is None:
            continue
        if out is logits or (origin is not None and origin_node(out) is origin):
            producer = (path, module)
            break
    activation = _ACTIVATION_NODES.get(type(origin).__name__) if origin is not None else None
    if activation is None and origin is None and producer is not None:  # no autograd graph
        activation = next((kind for cls, kind in _ACTIVATION_MODULES if isinstance(producer[1], cls)), None)
    where = (producer[0] or None) if producer is not None else None
    return activation, (where if activation else None), where


def _score_layer(logits: torch.Tensor, calls: list) -> Optional[str]:
    """The innermost module that made the output's values before its final activation: with
    `nn.Sequential(..., nn.Linear(64, 1), nn.LogSoftmax(1))` the Linear (`net.2`), not the
    LogSoftmax (`net.3`), since the Linear's width is the number of classes the user must change
    (issue 13's single_unit_softmax_sparse_ce port). None when no module made them."""
    node = origin_node(logits)
    while node is not None and type(node).__name__ in _ACTIVATION_NODES:
        parents = [n for n, _ in node.next_functions if n is not None]
        if len(parents) != 1:
            return None
        node = through_shape_ops(parents[0])
    if node is None:
        return None
    for path, _module, out in calls:  # completion order: the innermost module comes first
        if out is not None and path and origin_node(out) is node:
            return path
    return None


# --------------------------------------------------------------------------- batch-dependency

def probed_samples(size: int) -> list:
    """The samples whose outputs are differentiated: the first, a middle one and the last. A
    mix along the batch can be one-sided: an RNN run over the batch axis (a missing
    batch_first=True) makes sample i depend on samples 0..i-1 only, so sample 0 depends on no
    other (measured leak 0.0) while the last depends on all (0.22, issue 13)."""
    return sorted({0, size // 2, size - 1})


class BatchProbe:
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

    def __init__(self, model: nn.Module, size: int, tolerance: float):
        self.model, self.size = model, size
        self.tolerance = tolerance  # a cross-sample gradient below tolerance x the sample's own is round-off
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
        with modes_kept(self.model), torch.enable_grad():
            self.model.eval()
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
        worst: Any = None  # (ratio, sample, leak, own, leaking, intermediate gradients)
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
                leaking |= per_sample > self.tolerance * max(own_here, 1e-30)
            leaking[sample] = False
            ratio = leak / own if own > 0 else (math.inf if leak > 0 else 0.0)
            if worst is None or ratio > worst[0]:
                worst = (ratio, sample, leak, own, int(leaking.sum()), grads[len(self.leaves):])
        _, self.sample, leak, own, others, rest = worst
        self.grads = {id(t): g for t, g in zip(intermediates, rest)}
        return self.sample, leak, own, others

    def _leaks(self, t: Optional[torch.Tensor]) -> Optional[bool]:
        """Whether other samples' values of `t` reach sample i's output; None when no value
        of `t` reaches it at all (not on the path: it says nothing about where the mix is)."""
        grad = self.grads.get(id(t)) if t is not None else None
        if grad is None:
            return None
        per_sample = _per_sample(grad, self.size)
        if not bool(per_sample.max() > 0):
            # e.g. head 0's q projection when the mixing `view` fills sample i's row from
            # head 2 only: before, its zero gradient read as "only sample i comes out", and the
            # mix was put in that child instead of the parent whose forward does the view.
            return None
        own = per_sample[self.sample].item()
        others = torch.cat([per_sample[:self.sample], per_sample[self.sample + 1:]])
        return bool(others.max() > self.tolerance * max(own, 1e-30))

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


def probe_batch(model: nn.Module, batch: Batch, tolerance: float) -> tuple:
    """(the probe, its `run` result) for one batch of `batch.batch_size` samples; the probe's
    hooks are removed and the model's modes restored, whatever happens."""
    probe = BatchProbe(model, batch.batch_size or 0, tolerance)
    try:
        return probe, probe.run(batch)
    finally:
        probe.remove()


def _per_sample(grad: torch.Tensor, size: int) -> torch.Tensor:
    """max |gradient| per sample (NaN read as 0)."""
    return torch.nan_to_num(grad.detach().abs().float(), nan=0.0).reshape(size, -1).amax(1)
