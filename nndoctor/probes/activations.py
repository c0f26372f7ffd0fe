"""The activation scan: how often each unit of each activation fires, forward only.

One scan runs the model on a few training batches with no gradient and records,
for every activation the forward pass goes through:

* activation modules (`nn.ReLU`, `nn.GELU`, `nn.Tanh`, ...) through forward hooks;
* functional activations called inside a `forward` (`F.relu`, `torch.relu`,
  `x.relu()`, `F.gelu`, `torch.tanh`, ...) through a `TorchFunctionMode`, which
  sees the calls that module hooks cannot. Each call is attributed to the
  innermost module running its forward (a module stack kept by pre/post hooks);
  calls made by a measured activation module itself (`nn.ReLU` calls `F.relu`)
  are not counted twice.

Where an activation is reported (`ActivationStats.where`):

* a module: its path, `network.3`; a module called again in the same forward
  pass (torchvision's `self.relu` reused in a block) adds the call's index,
  `layer1.0.relu#1`;
* a functional call: `PATH:NAME#K`, the module whose forward made the call, the
  function's name and the call's index among that module's calls of that
  function in one forward pass of the model: `block2:relu#0` is the first
  `F.relu`/`torch.relu`/`.relu()` in `block2.forward`. PATH is empty for the
  model's own forward (`:relu#0`).

A unit is one feature: a channel for convolutional maps, the last dimension
after a Linear/LayerNorm/attention (see `_Recorder._unit_dim`). A rectifier's unit
*fires* on an element when its output is > 0, which for ReLU, GELU, SiLU, Mish and
Hardswish is the same as its input being > 0; a channel fires on a
sample when it is > 0 at any position. A sigmoid/tanh unit is *saturated* on an
element when its output is within `SATURATION_MARGIN` of an asymptote.

Non-finite outputs (NaN/Inf, from NaN inputs or a `log(0)` upstream) are neither:
`NaN > 0` is False, but a NaN-fed unit did not "never fire", it was never
observed. Each unit's finite elements are counted; only those are observations,
and a unit is judged dead only with `MIN_OBSERVATIONS` of them (the scan reads
more batches, up to `MAX_SCAN_BATCHES`, until every unit has them).

The scan runs in train mode, as the optimizer sees the model: BatchNorm
normalises with the batch's statistics (in eval mode at initialisation its
running stats are 0/1, an identity the training never sees) and
`nn.TransformerEncoderLayer` takes its Python path (its fused eval fast path
hides `F.relu`). Dropout modules are switched off: their zeros are noise, not
the unit's response. BatchNorm running statistics, train/eval flags and every
hook are put back in `finally`. Counts stay on the device and are read once,
at the end of the scan.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tracer import Tracer, modes_kept

SCAN_BATCHES = 4  # the scan's first batches (~128 samples at batch 32), at the cost of 4 forward
#                   passes; it goes on while a unit has fewer than MIN_OBSERVATIONS (below).
# A unit is called dead only after enough observations to have seen a rarely firing one fire:
# a unit that fires on RARE_RATE of its inputs is seen firing at least once in n independent
# observations with probability 1 - (1 - RARE_RATE)**n, which reaches CONFIDENCE at
# n = ln(1 - CONFIDENCE) / ln(1 - RARE_RATE) = 299. Measured (issue 13): LRASPP's squeeze-excitation
# ReLU (one observation per sample, after a global pool) read 19/32 units dead on 32 samples and
# 13/32 on 192: too few observations make live units look dead.
RARE_RATE = 0.01
CONFIDENCE = 0.95
MIN_OBSERVATIONS = math.ceil(math.log(1 - CONFIDENCE) / math.log(1 - RARE_RATE))  # 299
MAX_SCAN_BATCHES = 32  # the most batches the scan reads to reach MIN_OBSERVATIONS: 32 forward passes
#                        without gradient, ~10% of the shared run's 100 steps (a step is a forward
#                        and a ~2x backward); a unit still short of them is left inconclusive.
SATURATION_MARGIN = 0.01  # within 0.01 of an asymptote: tanh' = 1 - y² < 0.02 (2% of its peak),
#                           sigmoid' = y(1 - y) < 0.0099 (4% of its peak). Glorot & Bengio (2010),
#                           "Understanding the difficulty of training deep feedforward neural
#                           networks", §3: saturated sigmoid units (outputs ≈ 0) stall training.

RECTIFIER, SIGMOID, TANH = "rectifier", "sigmoid", "tanh"

# Activation modules measured by hooks: the family of each type.
ACTIVATION_MODULES = {
    nn.ReLU: RECTIFIER, nn.ReLU6: RECTIFIER,
    nn.GELU: RECTIFIER, nn.SiLU: RECTIFIER, nn.Mish: RECTIFIER, nn.Hardswish: RECTIFIER,
    nn.Sigmoid: SIGMOID, nn.Tanh: TANH,
}
# Softplus, Softsign, Hardtanh, Hardsigmoid are left out: Softplus is always > 0 and passes
# gradient at any input, so "never fires" means nothing for it; the others are rare.
# LeakyReLU, PReLU, RReLU, ELU, CELU and SELU are left out too: their negative side passes a
# real gradient (a slope, or α·eˣ ≈ 0.37α at x = -1), so a unit below 0 still learns — they
# are the usual cure for dying ReLUs, not a case of it. Measured: the fixed x⁴ regression of
# the real-bug benchmark (ELU, bench/REAL_BUGS.md) read 8 of 10 units "dead" while it learns.


def _functional_table() -> dict:
    """func -> (name, family, display name) for the functional forms TorchFunctionMode sees."""
    T = torch.Tensor
    table = {}
    entries: list[tuple[str, str, list[Any]]] = [
        ("relu", RECTIFIER, [F.relu, torch.relu, torch.relu_, T.relu, T.relu_]),
        ("relu6", RECTIFIER, [F.relu6]),
        ("gelu", RECTIFIER, [F.gelu]),
        ("silu", RECTIFIER, [F.silu]),
        ("mish", RECTIFIER, [F.mish]),
        ("hardswish", RECTIFIER, [F.hardswish]),
        ("sigmoid", SIGMOID, [torch.sigmoid, torch.sigmoid_, T.sigmoid, T.sigmoid_]),
        ("tanh", TANH, [torch.tanh, torch.tanh_, T.tanh, T.tanh_]),
    ]
    for name, family, funcs in entries:
        for func in funcs:
            table[func] = (name, family, _display_name(func))
    return table


def _display_name(func) -> str:
    """How the user wrote the call: `F.relu`, `torch.relu` or `Tensor.relu`."""
    name = func.__name__
    if getattr(torch.Tensor, name, None) is func:
        return f"Tensor.{name}"
    if getattr(torch, name, None) is func:
        return f"torch.{name}"
    return f"F.{name}"


FUNCTIONAL_ACTIVATIONS = _functional_table()

# What produced an activation's input decides which dimension holds the units:
# conv/BatchNorm/pooling maps are (N, C, ...) with channels at dim 1; Linear,
# LayerNorm, embeddings, RNNs and attention act on the last dimension.
_CHANNEL_FIRST_MODULES = (
    nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm, nn.LocalResponseNorm, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample,
    nn.PixelShuffle,
)
_FEATURE_LAST_MODULES = (
    nn.Linear, nn.Bilinear, nn.LayerNorm, nn.Embedding, nn.EmbeddingBag, nn.RNNBase,
    nn.MultiheadAttention,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_CHANNEL_FIRST_FUNCS = {F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                        F.conv_transpose3d, F.batch_norm, F.instance_norm, F.group_norm,
                        F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
                        F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                        F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.interpolate}
_FEATURE_LAST_FUNCS = {F.linear, F.bilinear, F.layer_norm, F.embedding, torch.matmul,
                       torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.addmm,
                       F.scaled_dot_product_attention}
_FEATURE_LAST_FUNCS |= {F.rms_norm} if hasattr(F, "rms_norm") else set()


# --------------------------------------------------------------------------- results

@dataclass
class ActivationStats:
    """What the scan saw of one activation (one module, or one functional call site)."""

    where: str  # "network.3", "layer1.0.relu#1", "block2:relu#0"
    kind: str  # "ReLU" (a module's class) or "F.relu" (a functional call)
    family: str  # RECTIFIER, SIGMOID or TANH
    unit_dim: int  # the dimension that holds the units, in the activation's output
    units: int
    elements_per_unit: int  # samples x positions each unit produced over the scan
    counts: torch.Tensor  # per unit, on the CPU: elements > 0 (rectifier) or saturated (sigmoid/tanh)
    after: Optional[str] = None  # the last layer (leaf module) that ran before it: a hint for the reader
    finite: Optional[torch.Tensor] = None  # per unit: its finite elements, the observations (None: all)
    min_observations: int = 0  # a unit with fewer finite elements is not judged dead

    @property
    def observations(self) -> torch.Tensor:
        """Per unit: its finite elements (a NaN/Inf output is not an observation)."""
        if self.finite is None:
            return torch.full((self.units,), self.elements_per_unit, dtype=torch.int64)
        return self.finite

    @property
    def rate(self) -> torch.Tensor:
        """Per unit: the fraction of its finite elements that fired (or were saturated)."""
        return self.counts.double() / self.observations.clamp(min=1).double()

    @property
    def judged(self) -> torch.Tensor:
        """Per unit: observed often enough (MIN_OBSERVATIONS finite elements) to be called dead."""
        return self.observations >= max(self.min_observations, 1)

    @property
    def judged_units(self) -> int:
        return int(self.judged.sum())

    @property
    def non_finite_units(self) -> int:
        """Units with at least one NaN/Inf output."""
        return int((self.observations < self.elements_per_unit).sum())

    @property
    def dead_mask(self) -> torch.Tensor:
        return (self.counts == 0) & self.judged

    @property
    def dead_units(self) -> int:
        """Rectifier units that never fired on any of their (enough) finite observations."""
        return int(self.dead_mask.sum())

    @property
    def dead_pct(self) -> float:
        """Dead units among the judged ones (0 when none is)."""
        judged = self.judged_units
        return 100.0 * self.dead_units / judged if judged else 0.0

    def saturated_units(self, min_rate: float) -> int:
        """Sigmoid/tanh units saturated on more than `min_rate` of their elements."""
        return int((self.rate > min_rate).sum())

    @property
    def saturated_output_pct(self) -> float:
        """The percentage of all this activation's outputs that were saturated."""
        return 100.0 * float(self.counts.sum()) / max(self.units * self.elements_per_unit, 1)


@dataclass
class ScanResult:
    layers: list = field(default_factory=list)  # ActivationStats, in the order first seen
    batches: int = 0
    samples: int = 0
    min_observations: int = 0  # the observations per unit a dead verdict needed
    skipped: list = field(default_factory=list)  # call sites whose unit count changed between calls

    def get(self, where: str) -> ActivationStats:
        for layer in self.layers:
            if layer.where == where:
                return layer
        raise KeyError(where)


# --------------------------------------------------------------------------- the scan

def activation_scan(session) -> ScanResult:
    """The scan of the session's model at its initial weights, done once per run."""
    return session.shared("activation_scan", lambda: session_scan(session))


def session_scan(session) -> ScanResult:
    """The scan of the session's model as it is now, on its first training batches: at least
    SCAN_BATCHES, more (up to MAX_SCAN_BATCHES) until every unit has MIN_OBSERVATIONS."""

    def forward(batch):
        if session.setup.loss_fn is not None:  # the model is called inside the user's loss
            return session.loss(batch)
        return session.forward(batch)

    def batches():  # fetched one by one: only as many as the scan reads are drawn and cached
        for i in range(MAX_SCAN_BATCHES):
            drawn = session.batches(i + 1)
            if len(drawn) <= i:
                return
            yield drawn[i]

    return scan_activations(session.model, batches(), forward, min_observations=MIN_OBSERVATIONS,
                            min_batches=SCAN_BATCHES)


def scan_activations(model: nn.Module, batches: Iterable[Any],
                     forward: Optional[Callable[[Any], Any]] = None, *, min_observations: int = 0,
                     min_batches: int = 1) -> ScanResult:
    """Run `forward(batch)` (default: `model(batch)`, or `model(*batch)` for a tuple) on the
    batches, in train mode with dropout off and no gradient, and count each activation's units
    firing. After `min_batches`, stop once every activation has `min_observations` elements per
    unit (0: read every batch); a unit with fewer finite ones is not judged dead.
    The model's modes, BatchNorm statistics and hooks are left as they were."""
    forward = forward or (lambda b: model(*b) if isinstance(b, (tuple, list)) else model(b))
    recorder = _Recorder(model)
    modules = list(model.modules())
    bn_stats = [(buf, buf.clone()) for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm)
                for buf in m.buffers(recurse=False)]
    result = ScanResult(min_observations=min_observations)
    try:
        with modes_kept(model), torch.no_grad(), recorder.install():
            model.train()
            for m in modules:
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.eval()
            for batch in batches:
                forward(batch)
                result.batches += 1
                result.samples += _batch_size(batch)
                if min_observations and result.batches >= min_batches and recorder.observed(min_observations):
                    break
    finally:
        recorder.remove()
        with torch.no_grad():
            for buf, saved in bn_stats:
                buf.copy_(saved)
    result.layers, result.skipped = recorder.collect()
    for layer in result.layers:
        layer.min_observations = min_observations
    return result


def _batch_size(batch: Any) -> int:
    size = getattr(batch, "batch_size", None)  # an engine.Batch
    if isinstance(size, int):
        return size
    tensors = [batch] if isinstance(batch, torch.Tensor) else \
        [t for t in (batch if isinstance(batch, (tuple, list)) else ()) if isinstance(t, torch.Tensor)]
    return int(tensors[0].shape[0]) if tensors and tensors[0].dim() > 0 else 1


class _Site:
    """Running counts of one activation call site, kept on the device."""

    def __init__(self, where, kind, family, unit_dim, units, device, after):
        self.where, self.kind, self.family, self.unit_dim, self.units = where, kind, family, unit_dim, units
        self.after = after
        self.counts = torch.zeros(units, dtype=torch.int64, device=device)
        self.finite = torch.zeros(units, dtype=torch.int64, device=device)
        self.elements_per_unit = 0
        self.inconsistent = False


class _Recorder(Tracer):
    """The module stack (`Tracer`), the per-forward call counters and the counts of every call site."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.model = model
        self.sites: dict = {}  # where -> _Site
        self.calls: dict = {}  # (module, function name) -> calls in this forward pass
        self.channel_first: Optional[bool] = None  # what the last producer says (None: unknown)
        self.last_layer: Optional[str] = None  # path of the last non-activation leaf module that ran

    # modules ------------------------------------------------------------------
    def on_enter(self, module, path, args):
        if not self.stack:  # a new forward pass of the model: call indices start again
            self.calls.clear()
            self.channel_first = None
            self.last_layer = None

    def on_exit(self, module, path, args, output):
        family = ACTIVATION_MODULES.get(type(module))
        if family is not None:
            if isinstance(output, torch.Tensor):
                index = self._next_call(module, None)
                self.record(path if index == 0 else f"{path}#{index}", type(module).__name__, family, output)
            return
        if isinstance(module, _CHANNEL_FIRST_MODULES):
            self.channel_first = True
        elif isinstance(module, _FEATURE_LAST_MODULES):
            self.channel_first = False
        if not isinstance(module, nn.modules.dropout._DropoutNd) and next(module.children(), None) is None:
            self.last_layer = path

    # functional calls ---------------------------------------------------------
    def on_call(self, func, args, kwargs, out, module_path):
        output = out
        entry = FUNCTIONAL_ACTIVATIONS.get(func)
        if entry is None:
            if func in _CHANNEL_FIRST_FUNCS:
                self.channel_first = True
            elif func in _FEATURE_LAST_FUNCS:
                self.channel_first = False
            return
        if not self.stack or type(self.stack[-1]) in ACTIVATION_MODULES:
            return  # outside the model (a loss_fn), or the module hook already counts it
        if not isinstance(output, torch.Tensor):
            return
        name, family, display = entry
        index = self._next_call(self.stack[-1], name)
        self.record(f"{module_path}:{name}#{index}", display, family, output)

    def _next_call(self, module, name) -> int:
        key = (id(module), name)
        index = self.calls.get(key, 0)
        self.calls[key] = index + 1
        return index

    # counting -----------------------------------------------------------------
    def _unit_dim(self, output: torch.Tensor) -> int:
        if output.dim() <= 1:
            return 0
        channel_first = self.channel_first if self.channel_first is not None else output.dim() >= 4
        return 1 if channel_first else output.dim() - 1

    def record(self, where: str, kind: str, family: str, output: torch.Tensor) -> None:
        if not output.is_floating_point() or output.numel() == 0:
            return
        output = output.detach()
        unit_dim = self._unit_dim(output)
        units = output.shape[unit_dim] if output.dim() else 1
        site = self.sites.get(where)
        if site is None:
            site = self.sites[where] = _Site(where, kind, family, unit_dim, units, output.device,
                                             self.last_layer)
        if site.inconsistent:
            return
        if units != site.units:  # a dynamic model: the same call site with another width
            site.inconsistent = True
            return
        # Counted now, on the device: a later in-place op cannot change what we saw.
        if family == RECTIFIER:
            hits = output > 0
        elif family == TANH:
            hits = output.abs() > 1 - SATURATION_MARGIN
        else:
            hits = (output < SATURATION_MARGIN) | (output > 1 - SATURATION_MARGIN)
        finite = torch.isfinite(output)
        hits &= finite  # an Inf is not an observation either (and +Inf > 0 would count as firing)
        if output.dim() == 0:
            site.counts += hits.reshape(1)
            site.finite += finite.reshape(1)
        else:
            other = [d for d in range(output.dim()) if d != unit_dim]
            site.counts += hits.sum(dim=other) if other else hits.long()
            site.finite += finite.sum(dim=other) if other else finite.long()
        site.elements_per_unit += output.numel() // units

    def observed(self, needed: int) -> bool:
        """Every unit of every call site has `needed` finite elements (one host sync, only once
        the element counts, known on the host, allow it)."""
        sites = [s for s in self.sites.values() if not s.inconsistent]
        if not sites or any(s.elements_per_unit < needed for s in sites):
            return False
        return bool(torch.stack([s.finite.min() for s in sites]).min() >= needed)

    def collect(self) -> tuple:
        """(ActivationStats list, skipped call sites), with one device-to-host copy."""
        sites = [s for s in self.sites.values() if not s.inconsistent]
        skipped = [s.where for s in self.sites.values() if s.inconsistent]
        if not sites:
            return [], skipped
        both = torch.stack([torch.cat([s.counts for s in sites]), torch.cat([s.finite for s in sites])]).cpu()
        sizes = [s.units for s in sites]
        counts, finite = both[0].split(sizes), both[1].split(sizes)
        return [ActivationStats(s.where, s.kind, s.family, s.unit_dim, s.units, s.elements_per_unit, c, s.after, f)
                for s, c, f in zip(sites, counts, finite)], skipped
