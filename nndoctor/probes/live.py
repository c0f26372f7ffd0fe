"""The live probe: measuring the user's own training loop through torch's global hooks.

`LiveProbe(history, model=None, optimizer=None, every=50)` takes a model and an
optimizer (either may be None: found from the first steps), not a Session, so it
works on any loop. What it attaches, all removed in `remove()`:

- global optimizer step pre/post hooks: a step is one step of the primary
  optimizer (the one given, else the first that steps), so gradient accumulation
  counts once. At the pre-hook (before the update) the step's loss and total
  gradient norm are read with ONE host sync; with a closure (LBFGS, Lightning's
  automatic optimisation runs forward and backward inside `step`), when the closure's
  first evaluation returns, before the update (the pre-hook hands step() it wrapped).
  The loss is read every step; the gradient norm every step while it costs at most
  NORM_BUDGET of the step's time (a real model's step), else every few steps (a tiny
  model on a CPU, where its fixed ~30 us is 5-10% of a step) and on every sampled step;
- `torch.autograd.backward` (which `Tensor.backward` calls), wrapped: the scalar it is
  called on is the step's loss (kept as a detached device tensor until the step's sync;
  a loop on `torch.autograd.grad` shows none, which the report notes); a loss that
  `GradScaler.scale` made is replaced by the unscaled one;
- `GradScaler.scale/unscale_/step`, wrapped: a `scaler.step` that did not reach the
  optimizer's step is a skipped step; `clip_grad_norm_` (wrapped too) while a scaled
  backward has not been unscaled is clip-before-unscale;
- on sampled steps only (every `every`-th), global module forward hooks: which
  modules run the forward (the model's root, found once, its Dropout/BatchNorm
  modules, the order the weight layers run in), and on the modules the step's
  forward enters by (the roots, or the submodules a LightningModule's
  `training_step` calls) one forward pre-hook kept for the whole run, which keeps
  the step's inputs (references, no copy) and, while the sampled steps see the step
  draw random numbers, its RNG state, so that a non-finite step can be re-run under
  `train_run._Tracer` before its update is applied, and a sampled step's forward
  re-run (no gradient) under the activation scan (`activations.scan_activations`), on
  the sampled steps as often as SCAN_BUDGET of the run's time allows.

What runs on every step is kept to the few Python operations it needs (the fixed cost of
watching a sub-millisecond step, bench/WATCH.md): the backward wrapper appends a detached
loss; the forward pre-hook keeps a reference to the inputs; the pre-step hook reads the
loss (one `.item()`), the LR and the root's mode; the post-step hook ends the step. The
norm, the sampled steps' work and the judges (in ranges of steps, `Judge.on_steps`) are
paced or batched.

A non-finite gradient whose loss is finite, on a step that did not read the norm, is
seen at the next step that does, or at the next step's loss (the update made the
weights non-finite: then localised to the parameters).

It fills a `History` (one entry per optimizer step) and calls `on_step(step)` after
each step's record and `on_step_end()` after the step; judging is the caller's
(`nndoctor.live`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves

from .activations import RECTIFIER, scan_activations
from .train_run import _kind_of, _nonfinite_leaf, _Tracer, node_name

# Modules whose train/eval mode changes what the forward computes: the ones that make
# eval-mode-in-training a bug rather than a no-op.
MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


def mode_dependent(module: nn.Module) -> bool:
    """A module that computes differently in eval mode: Dropout, BatchNorm, an RNN/LSTM/GRU
    with dropout between its layers and a MultiheadAttention with attention dropout (their
    `dropout` applies in train mode only)."""
    return isinstance(module, MODE_DEPENDENT) or (
        isinstance(module, nn.RNNBase) and module.dropout > 0 and module.num_layers > 1) or (
        isinstance(module, nn.MultiheadAttention) and module.dropout > 0)


# Functional dropouts that a forward turns off in eval mode (`F.dropout(x, p, training=self.training)`:
# Hugging Face's BART/Whisper/Marian/OPT layers, timm's classifier heads, PyG's GNNs) -> (the
# positional index of the rate `p`, that of the flag `training`, the flag's default); seen on
# the sampled steps of a run whose root is in eval mode after training, only then (see
# _watch_functional).
FUNCTIONAL_DROPOUTS = {
    "dropout": (1, 2, True), "dropout1d": (1, 2, True), "dropout2d": (1, 2, True),
    "dropout3d": (1, 2, True), "alpha_dropout": (1, 2, False), "feature_alpha_dropout": (1, 2, False),
}
# scaled_dot_product_attention takes a rate alone (`dropout_p=self.p if self.training else 0.0`):
# in eval mode its module's own rate attribute, one of these, says what it turned off.
ATTENTION_RATE_NAMES = ("attention_dropout", "attn_dropout", "dropout_p", "dropout_prob", "dropout")


# The share of the user's step time the per-step gradient norm may take. Reading it costs a
# fixed ~20-40 us on a CPU (one norm kernel per parameter, a stack, the sync): nothing against a
# real model's step of milliseconds, where it is read every step, but 5-10% of the tiny
# sample scripts' 0.4-2 ms steps. There it is read every few steps instead (at most every
# `every`, and always on sampled steps); the loss is still read, and checked, every step.
# Every read counts against the budget, the forced ones too (see _pace_norms).
NORM_BUDGET = 0.01
# A norm more than 2x the last one read (a few steps before) is read again at the next step,
# and so on while it keeps growing; a loss more than 2x (or non-finite) the one of the last
# step that read the norm has its norm read at once. Healthy runs' losses and norms move by
# well under 2x over a few steps once past the first ones; a diverging run's grow
# geometrically (warmup_nan: the loss 8 -> 50 -> 10781 -> 3e12 -> inf in its last steps).
NORM_GROWTH = 2.0
# The same for the activation scan of sampled steps (a forward without gradient, re-run under
# a TorchFunctionMode): ~1-2 forward passes on a real model, so every sampled step costs it
# ~1% there, but ~11 forwards of a tiny MLP (1.9 ms against a 0.4 ms step): there it runs on
# the sampled steps that a credit of SCAN_BUDGET of the run's time pays for (see _paced_scan).
SCAN_BUDGET = 0.02
# The step within each period at which parameters without a gradient on the sampled steps are
# looked at again moves by this much a period (coprime with the periods a loop cycles its tasks
# by, 2-6): the offsets 1, 8, 15, ... reach every residue.
GRAD_PROBE_STRIDE = 7


@dataclass
class NonFiniteEvent:
    """Where the first NaN/Inf of the run came from (see LiveProbe._localise)."""

    step: int
    kind: str  # "loss", "forward", "backward", "parameter", "input", "gradient", "all-reduce"
    where: Optional[str] = None
    scope: str = "model"
    op: Optional[str] = None
    value: Optional[str] = None
    source: Optional[tuple] = None
    loss: Optional[float] = None
    grad_norm: Optional[float] = None
    params: list = field(default_factory=list)
    reproduced: bool = True
    input_name: Optional[str] = None  # kind "input": the argument that holds them (`input_values`, `args[0]`)
    input_count: int = 0  # ... how many of its values are non-finite
    input_size: int = 0
    loss_op: Optional[str] = None  # kind "loss": the loss's last op, from its autograd node (`nll_loss`)
    ignore_index: Optional[int] = None  # ... nll_loss's, when it averages (reduction "mean")
    rank: Optional[int] = None  # kinds "all-reduce" and "parameter" under N ranks: this rank, of world_size
    world_size: Optional[int] = None


@dataclass
class UnitScan:
    """One rectifier of the model on a scanned step (a sampled one, or the step after the first
    when that one's inputs were not complete), counted since the run began (see
    LiveProbe._scan): how many of its units have been silent long enough to be dead."""

    where: str
    kind: str
    after: Optional[str]
    units: int
    judged: int  # units with at least min_observations finite observations since the start
    dead: int  # judged units silent on their last min_observations (or more) observations
    died_steps: list  # per dead unit, sorted: the first sampled step of its silent streak
    fired_before: int  # of the dead units, those that fired on an earlier sampled step
    observations: int  # the fewest silent observations among the dead units (0: none dead)
    period: int = 0  # steps since the scan before this one (0: the first)
    # per dead unit, in died_steps' order: the scan before its streak began (-1: none), so it
    # died after that step and by its died_steps one (scans are paced: the gap can be periods)
    died_after_steps: list = field(default_factory=list)


@dataclass
class History:
    """What the probe recorded, one entry per optimizer step (taken or skipped)."""

    every: int
    losses: list = field(default_factory=list)  # float, nan when none was seen
    grad_norms: list = field(default_factory=list)  # total norm; None on skipped steps
    lrs: list = field(default_factory=list)  # max over groups
    skipped: list = field(default_factory=list)
    scaler_seen: bool = False
    val_losses: list = field(default_factory=list)  # (step, value)
    eval_modules: dict = field(default_factory=dict)  # step -> [module paths in eval]
    clip_scaled: list = field(default_factory=list)  # steps at which clipping saw scaled grads
    clip_scale: Optional[float] = None  # the GradScaler's scale at the first of them
    nonfinite: Optional[NonFiniteEvent] = None
    no_grad_samples: dict = field(default_factory=dict)  # param name -> sampled steps without gradient
    samples: int = 0  # sampled steps judged for no-gradient
    not_in_optimizer: list = field(default_factory=list)
    # sampled step -> [(weight layer path, RMS gradient)] from the input side to the loss
    layer_rms: dict = field(default_factory=dict)
    # sampled step -> [UnitScan] for each rectifier the step's forward went through
    unit_scans: dict = field(default_factory=dict)
    min_observations: int = 0  # the observations a unit needs to be called dead
    # steps of another optimizer on a loss of its own (a backward since the primary's step: a GAN's
    # generator, an actor-critic's actor), whose losses are not the primary's
    other_objective_steps: int = 0
    # the primary optimizer had trained state at the first step watched: the run resumed from a
    # checkpoint (load_state_dict) or the watch began mid-run; its loss starts where it had got to
    resumed: bool = False
    grad_seen: set = field(default_factory=set)  # param names with a gradient on some step off the sampled ones

    @property
    def steps(self) -> int:
        return len(self.losses)


class _SiteState:
    """Per rectifier call site: per unit, observations since it last fired, and since when."""

    def __init__(self, units: int):
        self.seen = torch.zeros(units, dtype=torch.int64)  # finite observations since the start
        self.silent = torch.zeros(units, dtype=torch.int64)  # finite observations since it last fired
        self.since = torch.zeros(units, dtype=torch.int64)  # the sampled step its silence began
        self.before = torch.full((units,), -1, dtype=torch.int64)  # the scan before that (-1: none)
        self.fired = torch.zeros(units, dtype=torch.bool)  # fired on some sampled step


class LiveProbe:
    """Measure training steps into `history` from `install()` to `remove()`."""

    def __init__(self, history: History, model: Optional[nn.Module] = None, optimizer: Any = None, *,
                 every: int = 50, on_step: Optional[Callable[[int], None]] = None,
                 on_step_end: Optional[Callable[[], None]] = None, scan_units: bool = True,
                 min_observations: int = 0, skip_layers: tuple = ()):
        self.history, self.every = history, int(every)
        self.optimizer = optimizer
        self.roots: list = [model] if model is not None else []
        self.on_step = on_step or (lambda step: None)
        self.on_step_end = on_step_end  # None: nothing to run after a step
        self.scan_units, self.min_observations = scan_units, min_observations
        history.min_observations = min_observations
        self.skip_layers = skip_layers  # weight layers left out of layer_rms (sparse gradients)
        self.notes: list = []
        self._undo: list = []  # (object, attribute, original) patches
        self._handles: list = []  # hook handles for the whole run
        self._sampled_handles: list = []  # global module hooks of the current sampled step
        self._functional_patches: list = []  # (name, original) of F's dropouts wrapped this step
        self._losses: list = []  # detached loss tensors since the last step
        self._loss_node = None  # the last backwarded loss's grad_fn (names the loss's op on a NaN)
        self._scaled: dict = {}  # id(scaled loss) -> unscaled loss
        self._scaled_pending = None  # the GradScaler of a scaled backward not yet unscaled
        self._busy = False  # our own re-run: ignore hooks
        self._others: dict = {}  # id -> the optimizers other than the primary that stepped
        self._gradless: list = []  # (name, param) without a gradient on every sampled step so far
        self._grad_probe_step: Optional[int] = None  # the step that looks at them again (_sample)
        self._warning_filter: Optional[tuple] = None  # the warnings filter install() added
        self._stepped = False  # the primary optimizer's step ran (inside scaler.step)
        self._resume_checked = False  # History.resumed was read, at the primary's first step
        self._mode_modules: dict = {}  # Dropout/BatchNorm module -> path, seen training
        self._compiled: dict = {}  # id(original) -> its mode-dependent modules, for a compiled root
        self._sharded = False  # a root is sharded across the ranks (FSDP): no re-run of it is possible
        self._root_trained = False  # a root was in train mode at some step
        self._functional_off: dict = {}  # module -> its functional dropouts turned off by eval mode
        self._functional_names: dict = {}  # module -> its path, for those
        self._candidates: list = []  # modules called at the top level on a sampled step
        self._entries: set = set()  # ids of the modules whose inputs are kept (forward pre-hook)
        self._order: dict = {}  # id(module) -> when it first ran a forward (sampled steps)
        self._call: Optional[dict] = None  # the step's first forward inputs of an entry module
        self._stack: list = []
        self._params_cache: tuple = (None, None, [])
        self._names: dict = {}  # id(param) -> name within the roots
        self._closure_step = False
        self._closure_recorded = False  # this closure step was measured (see _watch_closure)
        self._layers: Optional[list] = None  # [(path, [params])] weight layers, in the order they ran
        self._nonzero: set = set()  # ids of params with a nonzero gradient on some sampled step
        self._sites: dict = {}  # where -> _SiteState
        self._sparse: Optional[bool] = None  # some gradient is sparse (checked until one is dense)
        self._sharded_grads: Optional[bool] = None  # the gradients are DTensors (FSDP2): read locally
        self._last_record: Optional[float] = None  # perf_counter at the last step's record
        self._step_seconds: Optional[float] = None  # the time between two steps, smoothed
        self._next_norm = 0  # the next step that reads the gradient norm
        self._last_norm: Optional[float] = None  # the last gradient norm read
        self._norm_loss: Optional[float] = None  # the loss of the last step that read the norm
        self._norm_step: Optional[int] = None  # the last step that read the norm
        self._norm_balance = 0.0  # seconds of NORM_BUDGET earned and not spent (see _pace_norms)
        self._rng_used: Optional[bool] = None  # the steps draw random numbers (None: not known yet)
        self._scan_cost: Optional[float] = None  # CPU seconds the last activation scan took
        self._scan_credit = 0.0  # seconds of SCAN_BUDGET not spent yet (see _paced_scan)
        self._scan_pending = False  # a sampled step's scan waits for the next step's inputs
        self.scans = 0  # activation scans run
        self.unseen_losses = 0  # steps taken with no loss seen (torch.autograd.grad, no backward call)
        self._last_scan: Optional[int] = None  # the step of the last activation scan

    # ------------------------------------------------------------------ lifecycle

    def install(self) -> None:
        try:
            self._install()
            if self.roots:
                for root in self.roots:
                    self._enter_by(root)  # compiled in place before the watch began
                self._adopt_roots(self.roots)
            self._begin_step()
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        self._end_sampled()
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for obj, attr, original in reversed(self._undo):
            setattr(obj, attr, original)
        self._undo = []
        if self._warning_filter is not None:
            with contextlib.suppress(ValueError):  # the user's code reset the filters
                cast(list, warnings.filters).remove(self._warning_filter)  # typed a Sequence, a list
                getattr(warnings, "_filters_mutated", lambda: None)()  # its caches (CPython 3.8-3.12)
            self._warning_filter = None

    def log_loss(self, loss: Any) -> None:
        """The step's loss as the user gives it (overrides the one seen through backward)."""
        self._losses = [_detached(loss)]

    # ------------------------------------------------------------------ installation

    def _patch(self, obj: Any, attr: str, make) -> None:
        original = getattr(obj, attr)
        self._undo.append((obj, attr, original))
        setattr(obj, attr, make(original))

    def _install(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        self._handles.append(register_optimizer_step_pre_hook(self._pre_step))
        self._handles.append(register_optimizer_step_post_hook(self._post_step))
        # torch.autograd.backward, which Tensor.backward calls: a loop calling it directly is seen too
        self._patch(torch.autograd, "backward", self._wrap_backward)
        scaler = torch.amp.GradScaler
        self._patch(scaler, "scale", self._wrap_scale)
        self._patch(scaler, "unscale_", self._wrap_unscale)
        self._patch(scaler, "step", self._wrap_scaler_step)
        clip = torch.nn.utils.clip_grad
        for owner in (torch.nn.utils, clip):
            self._patch(owner, "clip_grad_norm_", self._wrap_clip)
            self._patch(owner, "clip_grad_value_", self._wrap_clip)
        self._patch(nn.Module, "__getstate__", _wrap_getstate)
        self._patch(nn.Module, "compile", self._wrap_compile)
        # torch warns at each compiled module's call while global module hooks are on (the sampled
        # steps'): that they fire for the compiled module too, which _enter expects; the user has
        # no hooks to change. Left out while watching, the filter removed in remove().
        warnings.filterwarnings("ignore", message=r"Using `torch\.compile\(module\)` when there are global hooks",
                                category=UserWarning)
        self._warning_filter = warnings.filters[0]

    def _wrap_compile(self, original):
        probe = self

        @functools.wraps(original)
        def compile(module, *args, **kwargs):
            result = original(module, *args, **kwargs)
            probe._enter_by(module)
            return result
        return compile

    def _enter_by(self, module: nn.Module) -> None:
        """A module compiled in place (`module.compile()`) runs its hooks, global ones included,
        inside its compiled graph, where they do nothing: its compiled call is wrapped so that
        the watcher sees it enter and keeps its inputs eagerly, as it does for torch.compile's
        wrapper (see _CompiledEntry). Undone in remove()."""
        compiled = getattr(module, "_compiled_call_impl", None)
        if compiled is not None and not isinstance(compiled, _CompiledEntry):
            module._compiled_call_impl = _CompiledEntry(self, module, compiled)
            self._undo.append((module, "_compiled_call_impl", compiled))

    def _wrap_backward(self, original):
        probe = self

        def backward(tensors, *args, **kwargs):
            tensor = tensors if isinstance(tensors, torch.Tensor) else \
                tensors[0] if isinstance(tensors, (list, tuple)) and len(tensors) == 1 else None
            if not probe._busy and tensor is not None and tensor.numel() == 1:
                if probe._scaled and id(tensor) in probe._scaled:  # a loss GradScaler.scale made
                    tensor_seen, probe._scaled_pending = probe._scaled.pop(id(tensor))
                    probe.history.scaler_seen = True
                    probe._losses.append(_detached(tensor_seen))
                    probe._loss_node = getattr(tensor_seen, "grad_fn", None)
                else:
                    probe._losses.append(tensor.detach())
                    probe._loss_node = tensor.grad_fn
            return original(tensors, *args, **kwargs)
        backward.__wrapped__ = original
        return backward

    def _wrap_scale(self, original):
        probe = self

        def scale(scaler, outputs):
            scaled = original(scaler, outputs)
            if isinstance(scaled, torch.Tensor) and scaled is not outputs:
                probe._scaled[id(scaled)] = (outputs, scaler)
            return scaled
        return scale

    def _wrap_unscale(self, original):
        probe = self

        def unscale_(scaler, optimizer):
            probe._scaled_pending = None
            return original(scaler, optimizer)
        return unscale_

    def _wrap_scaler_step(self, original):
        probe = self

        def step(scaler, optimizer, *args, **kwargs):
            primary = probe.optimizer is None or optimizer is probe.optimizer
            probe._stepped = False
            result = original(scaler, optimizer, *args, **kwargs)
            probe._scaled_pending = None
            if primary and not probe._stepped and scaler.is_enabled():
                probe.optimizer = probe.optimizer or optimizer
                probe._record(optimizer, skipped=True)
                probe._end_step()
            return result
        return step

    def _wrap_clip(self, original):
        probe = self

        def clip(*args, **kwargs):
            scaler = probe._scaled_pending
            if scaler is not None and not probe._busy:
                if not probe.history.clip_scaled:  # the scale, read once (a sync)
                    probe.history.clip_scale = scaler.get_scale()
                probe.history.clip_scaled.append(probe.history.steps)
            return original(*args, **kwargs)
        clip.__wrapped__ = original
        return clip

    # ------------------------------------------------------------------ steps

    # The two hooks run on every step: kept to a few attribute reads on a step without a closure.

    def _pre_step(self, optimizer, args, kwargs) -> Optional[tuple]:
        if self._busy:
            return None
        if optimizer is not self.optimizer and not self._is_primary(optimizer):
            self._others[id(optimizer)] = optimizer
            if self._losses:  # it steps on a loss backwarded since the primary's step: its own
                self.history.other_objective_steps += 1
                self._losses = []
            return None
        self._stepped = True
        if not self._resume_checked:
            self._resume_checked = True
            self.history.resumed = _trained(optimizer)
        # args holds the optimizer itself first (torch's step wrapper passes its own *args)
        self._closure_step = len(args) > 1 and callable(args[1]) or callable(kwargs.get("closure"))
        if not self._closure_step:  # the gradients are there now, before the update
            self._record(optimizer, skipped=False)
            return None
        return self._watch_closure(optimizer, args, kwargs)

    def _watch_closure(self, optimizer, args: tuple, kwargs: dict) -> tuple:
        """step(closure)'s forward and backward run inside step() (LBFGS, SGD's closure form,
        Lightning's automatic optimisation): the closure, wrapped, measures the step when its
        first evaluation returns, before the optimizer updates the weights with it (a step
        hook may hand step() new arguments), so that a NaN is re-run at the weights that made
        it. Its loss is the first seen since the last step: the first closure's (LBFGS's line
        search evaluates it again at other weights), or one backwarded before step() (SAM's
        first pass, whose closure is the second, at perturbed weights)."""
        keyword = callable(kwargs.get("closure"))
        closure = kwargs["closure"] if keyword else args[1]
        probe = self
        self._closure_recorded = False

        def closure_watched(*a, **k):
            loss = closure(*a, **k)
            if not probe._closure_recorded:
                probe._record_closure_step(optimizer)
            return loss
        if keyword:
            return args, {**kwargs, "closure": closure_watched}
        return (args[0], closure_watched, *args[2:]), kwargs

    def _post_step(self, optimizer, args, kwargs) -> None:
        if self._busy or optimizer is not self.optimizer:
            return
        if self._closure_step:
            if not self._closure_recorded:  # a step that never evaluated its closure
                self._record_closure_step(optimizer)
            self._losses = []  # the closure's later evaluations: not the next step's
        self._end_step()

    def _record_closure_step(self, optimizer) -> None:
        self._closure_recorded = True
        del self._losses[1:]  # the first loss seen since the last step (see _watch_closure)
        self._record(optimizer, skipped=False)

    def _is_primary(self, optimizer) -> bool:
        if self.optimizer is None:
            self.optimizer = optimizer
        return optimizer is self.optimizer

    def _params(self, optimizer) -> tuple:
        """The optimizer's parameters and whether they share one device (cached; a new
        parameter group, add_param_group's way, refreshes it)."""
        key = (id(optimizer), len(optimizer.param_groups))
        if self._params_cache[0] != key:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            self._params_cache = (key, len({p.device for p in params}) <= 1, params)
        return self._params_cache[2], self._params_cache[1]

    def _record(self, optimizer, skipped: bool) -> None:
        """One step's loss, gradient norm (when due, see NORM_BUDGET) and LR, with one host
        sync; then `on_step`. The common step (one loss, no norm due, not sampled) takes the
        short path: one `.item()` and a few comparisons, no tensor op."""
        h = self.history
        step = len(h.losses)
        sampled = step % self.every == 0
        now = time.perf_counter()
        if self._last_record is not None:  # the user's step time, smoothed (ours included)
            interval = now - self._last_record
            self._step_seconds = interval if self._step_seconds is None else \
                0.9 * self._step_seconds + 0.1 * interval
        self._last_record = now
        losses = self._losses
        self._losses = []
        if len(losses) == 1 and not (skipped or sampled or step >= self._next_norm):
            loss = losses[0].item()  # the step's one sync
            norm = None
            values: list = []
            last = self._norm_loss  # _loss_jumped, inline
            if not math.isfinite(loss) or (last is not None and last > 0 and loss > NORM_GROWTH * last):
                loss, norm, values = self._read(optimizer, [], skipped, sampled, step, now, known=(loss,))
        else:
            loss, norm, values = self._read(optimizer, losses, skipped, sampled, step, now)
        lr = None
        for group in optimizer.param_groups:
            value = group.get("lr")
            if value is not None:
                value = float(value)
                lr = value if lr is None or value > lr else lr
        h.losses.append(loss)
        h.grad_norms.append(norm)
        h.lrs.append(lr)
        h.skipped.append(skipped)
        if step == self._grad_probe_step and not skipped:
            self._probe_gradless()
        if step == 1 and self.roots:
            self._find_not_in_optimizer()
        if not skipped:
            if sampled:
                self._check_rng()
                self._sample(step, self._params(optimizer)[0], values)
            elif self._scan_pending:
                self._scan_pending = False
                if self.scan_units:
                    began = time.thread_time()
                    if self._scan(step):
                        self._scan_cost = time.thread_time() - began
            for root in self.roots:
                if not root.training:
                    self._eval_mode(step)
                    break
            else:
                if not self._root_trained:
                    self._root_trained = bool(self.roots)
            # Under a GradScaler inf/NaN gradients are its business (it skips the step): those are
            # judged as amp-skipped-steps, never as non-finite.
            # A step whose loss was not seen (torch.autograd.grad, no backward) records a NaN loss:
            # only its gradient norm can say it went non-finite.
            if h.nonfinite is None and not h.scaler_seen and not (
                    (math.isfinite(loss) or not losses) and (norm is None or math.isfinite(norm))):
                h.nonfinite = self._localise(step, loss, norm, self._params(optimizer)[0])
        self.on_step(step)

    def _read(self, optimizer, losses: list, skipped: bool, sampled: bool, step: int, now: float,
              known: Optional[tuple] = None) -> tuple:
        """(loss, total gradient norm or None, per-parameter norms), read with one host sync.
        With `known` ((the loss,): read alone already, and it jumped, see _loss_jumped) the
        norm alone is read, a second sync on such steps only."""
        params, one_device = self._params(optimizer)
        with_norm = known is not None or (not skipped and (sampled or step >= self._next_norm))
        grads = [p.grad for p in params if p.grad is not None] if with_norm else []
        if grads and self._sharded_grads is None:  # once: the parameters keep their type
            self._sharded_grads = any(hasattr(g, "to_local") for g in grads)
            if self._sharded_grads:
                self.notes.append("the gradient norms are this rank's shards' (FSDP: the whole model's would "
                                  "take an all-reduce the user's step does not make), at most the whole's")
        if self._sharded_grads:
            grads = [_local(g) for g in grads]
        if grads and self._sparse is not False:
            self._sparse = any(g.is_sparse for g in grads)
            if self._sparse:
                grads = [g.coalesce().values() if g.is_sparse else g for g in grads]
        parts = []
        if losses:
            loss_t = losses[0] if len(losses) == 1 else torch.stack(
                [_f32(t.to(losses[0].device)) for t in losses]).mean()
            parts.append(_f32(loss_t))
        if grads:
            # Per-parameter norms in one fused kernel, read with the loss in one sync; the total
            # is summed here (a few floats) rather than by two more device ops.
            norms = torch._foreach_norm(grads, 2, dtype=torch.float32) if one_device \
                else [torch.linalg.vector_norm(g).float() for g in grads]
            device = parts[0].device if parts else norms[0].device
            parts += [n if n.device == device else n.to(device) for n in norms]
            values = torch.stack(parts).tolist()  # the step's one host sync
        else:
            values = [parts[0].item()] if parts else []  # the loss alone: the step's one sync
        if known is not None:
            loss = known[0]
        else:
            loss = values.pop(0) if losses else math.nan
            if not losses and not skipped:
                self.unseen_losses += 1
            if not with_norm and not skipped and losses and self._loss_jumped(loss):
                # a loss far above the last one that came with a norm, or non-finite: the norm too
                return self._read(optimizer, [], skipped, sampled, step, now, known=(loss,))
        if with_norm:
            self._norm_loss = loss
        norm = math.sqrt(math.fsum(v * v for v in values)) if grads else \
            (0.0 if with_norm else None)
        if with_norm:
            self._pace_norms(step, time.perf_counter() - now, norm)
        return loss, norm, values

    def _loss_jumped(self, loss: float) -> bool:
        last = self._norm_loss
        return not math.isfinite(loss) or (last is not None and last > 0 and loss > NORM_GROWTH * last)

    def _pace_norms(self, step: int, cost: float, norm: Optional[float]) -> None:
        """The next step that reads the gradient norm: the next one when that costs at most
        NORM_BUDGET of a step, or while the norm grows (NORM_GROWTH since the last read: an
        exploding gradient is followed step by step to its overflow), else as many steps
        later as keep it within the budget (at most `every`). Every read is charged to the
        budget, the paced ones and those a sampled step, a growing norm or a jumping loss
        forced: a balance earns NORM_BUDGET of each step since the last read (at most one
        read's worth) and pays each read's cost, and the next paced read waits until it can
        pay for one again."""
        last, self._last_norm = self._last_norm, norm
        growing = norm is not None and last is not None and not norm <= NORM_GROWTH * last
        budget = NORM_BUDGET * (self._step_seconds or 0.0)
        since = step - self._norm_step if self._norm_step is not None else 0
        self._norm_step = step
        if not budget > 0:
            self._next_norm = step + 1
            return
        self._norm_balance = min(self._norm_balance + since * budget, max(cost, budget)) - cost
        period = 1 if growing else min(self.every, max(1, math.ceil((cost - self._norm_balance) / budget)))
        self._next_norm = step + period

    def _end_step(self) -> None:
        if self._sampled_handles:
            self._end_sampled()
        if self._scaled:
            self._scaled.clear()
        self._call = None
        self._loss_node = None  # the step's graph is not kept beyond it
        if self.on_step_end is not None:
            self.on_step_end()
        self._begin_step()

    # ------------------------------------------------------------------ sampled steps

    def _begin_step(self) -> None:
        if len(self.history.losses) % self.every != 0:
            return
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        self._stack = []
        self._sampled_handles = [register_module_forward_pre_hook(self._enter),
                                 register_module_forward_hook(self._leave, always_call=True)]

    def _end_sampled(self) -> None:
        for handle in self._sampled_handles:
            handle.remove()
        self._sampled_handles = []
        for name, original in self._functional_patches:
            setattr(F, name, original)
        self._functional_patches = []

    def _watch_functional(self) -> None:
        """For the rest of this sampled step, from a forward with gradient that enters in eval
        mode after the root trained (a healthy run never gets here): torch.nn.functional's
        dropouts wrapped to see which modules' forwards turn theirs off because of the mode."""
        for name, spec in [*FUNCTIONAL_DROPOUTS.items(), ("scaled_dot_product_attention", None)]:
            original = getattr(F, name, None)
            if original is not None:
                self._functional_patches.append((name, original))
                setattr(F, name, self._functional_wrapper(name, original, spec))

    def _functional_wrapper(self, name: str, original, spec):
        probe = self

        @functools.wraps(original)
        def functional(*args, **kwargs):
            if _compiling():  # traced into a graph: nothing of the probe's may be touched there
                return original(*args, **kwargs)
            if probe._stack and not probe._busy and torch.is_grad_enabled():
                module = probe._stack[-1]
                if not module.training and not isinstance(module, MODE_DEPENDENT):
                    if spec is None:  # attention: its rate is 0 now, the module's own one is not
                        rate = args[4] if len(args) > 4 else kwargs.get("dropout_p", 0.0)
                        own = next((v for v in (getattr(module, a, None) for a in ATTENTION_RATE_NAMES)
                                    if isinstance(v, float)), 0.0)
                        off = rate == 0 and own > 0
                    else:
                        at_rate, at_flag, default = spec
                        rate = args[at_rate] if len(args) > at_rate else kwargs.get("p", 0.5)
                        on = args[at_flag] if len(args) > at_flag else kwargs.get("training", default)
                        off = not on and isinstance(rate, float) and rate > 0
                    if off:
                        probe._functional_off.setdefault(module, set()).add(name)
            return original(*args, **kwargs)
        return functional

    def _enter(self, module, args) -> None:
        # Under torch.compile the hooks of the modules inside the compiled one are traced into
        # its graph: they do nothing there (the compiled module itself is seen, eagerly).
        if _compiling() or self._busy or not torch.is_grad_enabled():
            return
        if _is_compiled(module):  # the root, or a part the user compiled (model.encoder = torch.compile(...))
            self._enter_compiled(module)
        elif not self._stack and not module.training and self._root_trained and not self._functional_patches \
                and not self._compiled:
            self._watch_functional()  # a forward in eval mode after training, with gradient
        if not self._stack and module not in self._candidates:
            self._candidates.append(module)
            if self._call is None and id(module) not in self._entries:
                # a module this step's forward enters by, not hooked yet: its positional inputs
                # (keyword ones are kept from the next step on, by the pre-hook added in _sample)
                self._call = {"module": module, "args": args, "kwargs": None, "rng": _rng_state()}
        self._stack.append(module)
        if id(module) not in self._order:
            self._order[id(module)] = len(self._order)
        if module.training and module not in self._mode_modules and mode_dependent(module):
            self._mode_modules[module] = None  # named when the roots are known

    def _enter_compiled(self, module: nn.Module) -> None:
        """A compiled module entered eagerly (torch.compile's wrapper): the hooks of the modules
        inside it are traced into its graph and do nothing, so what they would have seen is read
        from the original module instead: the order of its modules (registration order, which is
        a Sequential's and most models' forward order) and, while it trains, its Dropout/BatchNorm
        modules in train mode. F's functional dropouts are not wrapped for it: a wrapped function
        is a new global to the compiled graph's guards, a recompilation each sampled step."""
        original = _eager(module)
        known = self._compiled.get(id(original))
        if known is None:
            known = self._compiled[id(original)] = []
            for m in original.modules():
                self._order.setdefault(id(m), len(self._order))
                if mode_dependent(m):
                    known.append(m)
        if module.training:
            for m in known:
                if m.training and m not in self._mode_modules:
                    self._mode_modules[m] = None  # named when the roots are known

    def enter_compiled_step(self, module: nn.Module) -> None:
        """For a step whose forward runs inside a compiled function that is no module's call
        (Lightning compiles the LightningModule's training_step): on a sampled step, what the
        hooks of the modules inside would have seen, read from `module` (see _enter_compiled).
        Called by an integration before each step's forward."""
        if self._sampled_handles and not _compiling():
            self._enter_compiled(module)

    def _leave(self, module, args, output) -> None:
        if not _compiling() and self._stack and self._stack[-1] is module:
            self._stack.pop()

    def _sample(self, step: int, params: list, norms: list) -> None:
        """At a sampled step: find the roots (once), note parameters without gradient,
        Dropout/BatchNorm modules that trained before, the weight layers' RMS gradients and
        the rectifiers' units firing (the activation scan on this step's inputs)."""
        h = self.history
        if not self.roots:
            in_optimizer = {id(p) for p in params}
            roots = [m for m in self._candidates if any(id(p) in in_optimizer for p in m.parameters())]
            if roots:
                self._adopt_roots(roots)
        for module in self._candidates:  # keep the inputs of the modules the forward enters by
            if id(module) not in self._entries and self._within_roots(_eager(module)):
                self._hook_entry(module)
        self._candidates = []
        h.samples += 1
        with_grad = [p for p in params if p.grad is not None]
        grad_norm = {id(p): n for p, n in zip(with_grad, norms)}
        gradless = []
        for i, p in enumerate(params):
            if p.requires_grad and grad_norm.get(id(p), 0.0) == 0.0:
                name = self._names.get(id(p)) or f"param{i}"
                h.no_grad_samples[name] = h.no_grad_samples.get(name, 0) + 1
                if h.no_grad_samples[name] == h.samples and name not in h.grad_seen:
                    gradless.append((name, p))
        # Parameters with no gradient on every sampled step so far are looked at once more in
        # each period, at a step that moves through the period (GRAD_PROBE_STRIDE): a loop that
        # alternates its heads or tasks by step (a multi-task model, task = step % 2) trains
        # them on the steps that are never sampled.
        self._gradless = gradless
        self._grad_probe_step = (step + 1 + (h.samples * GRAD_PROBE_STRIDE) % (self.every - 1)
                                 if gradless and self.every > 1 else None)
        for module in list(self._mode_modules):
            if self._mode_modules[module] is None:
                self._mode_modules[module] = self._module_name(module)
        self._layer_rms(step, grad_norm)
        if self.scan_units:
            self._paced_scan(step)

    def _probe_gradless(self) -> None:
        """A step off the sampled ones: which of the parameters without a gradient on every
        sampled step have a nonzero one now (one small norm kernel and sync, once a period, only
        while some are left)."""
        with_grad = [(name, _local(p.grad)) for name, p in self._gradless if p.grad is not None]
        if with_grad:
            grads = [g.coalesce().values() if g.is_sparse else g for _, g in with_grad]
            norms = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]).tolist()
            self.history.grad_seen.update(name for (name, _), n in zip(with_grad, norms) if n > 0)

    def _paced_scan(self, step: int) -> None:
        """The activation scan on a sampled step while its cost stays within SCAN_BUDGET of the
        run's time: each sampled step adds SCAN_BUDGET of a period's time to a credit (at most
        one scan's worth, so no burst follows a slow phase) and a scan runs when the credit
        covers the last one's cost. A scan that cannot run for want of the step's complete
        inputs (the first sampled step, before the module the forward enters by is hooked)
        runs at the next step instead (see _record). A scan's cost is its thread's CPU time: on
        a loaded machine its wall time is mostly other processes' (a scan preempted once costs
        5-10x), and one such scan would delay the next ones by as many periods."""
        budget = SCAN_BUDGET * (self._step_seconds or 0.0) * self.every  # per sampled step
        cost = self._scan_cost
        if cost is not None:
            self._scan_credit = min(self._scan_credit + budget, max(cost, budget))
            if self._scan_credit < cost:
                return
        began = time.thread_time()
        if not self._scan(step):
            self._scan_pending = self._call is None or self._call["kwargs"] is None
            return
        self._scan_cost = time.thread_time() - began
        if cost is not None:
            self._scan_credit -= self._scan_cost

    def _layer_rms(self, step: int, grad_norm: dict) -> None:
        """The RMS gradient of each weight layer (its >= 2-D parameters) that got a nonzero one."""
        self._nonzero.update(i for i, n in grad_norm.items() if n != 0.0)
        if self._layers is None and self.roots and self._order:
            layers = []
            for root in self.roots:
                for path, module in root.named_modules():
                    if isinstance(module, self.skip_layers) or id(module) not in self._order:
                        continue
                    weights = [p for p in module.parameters(recurse=False) if p.requires_grad and p.dim() >= 2]
                    if weights:
                        layers.append((self._order[id(module)], path, weights))
            self._layers = [(path, weights) for _, path, weights in sorted(layers, key=lambda t: t[0])]
        rms = []
        for path, weights in self._layers or []:
            live = [p for p in weights if id(p) in self._nonzero and id(p) in grad_norm]
            if live:
                total = math.sqrt(math.fsum(grad_norm[id(p)] ** 2 for p in live))
                rms.append((path, total / math.sqrt(sum(p.numel() for p in live))))
        if rms:
            self.history.layer_rms[step] = rms

    def _scan(self, step: int) -> bool:
        """The activation scan on this step's forward inputs (no gradient, dropout off, modes,
        BatchNorm statistics and RNG put back); each rectifier unit's silence is counted in
        finite observations since it last fired, across sampled steps. False: it did not run."""
        call = self._call
        if call is None or call["kwargs"] is None or not self._within_roots(_eager(call["module"])):
            return False
        if self._sharded:
            self.scan_units = False
            self.notes.append("the activation scan does not run on a sharded model (FSDP): its forward "
                              "gathers the parameters from the other ranks, which a re-run on one rank cannot")
            return False
        module = _eager(call["module"])
        rng = _rng_state()
        # every buffer, not only BatchNorm's (the scan restores those): a forward that counts
        # its calls or keeps running statistics of its own must not see the re-run
        buffers = [(b, b.detach().clone()) for b in module.buffers()]
        self._busy = True
        try:
            with _run_eagerly(module):
                scan = scan_activations(module, [call], lambda c: module(*c["args"], **c["kwargs"]))
        except Exception as exc:  # the scan must never break the user's run
            self.scan_units = False
            self.notes.append(f"the activation scan could not run on this model: {type(exc).__name__}: {exc}")
            return False
        finally:
            with torch.no_grad():
                for b, value in buffers:
                    b.copy_(value)
            _set_rng_state(rng)
            self._busy = False
        prefix = self._module_name(module) if module not in self.roots else ""
        previous = self._last_scan if self._last_scan is not None else -1  # where a new silence began after
        scans = []
        for stats in scan.layers:
            if stats.family != RECTIFIER:
                continue
            where = f"{prefix}.{stats.where}" if prefix and not stats.where.startswith(":") else \
                f"{prefix}{stats.where}"
            site = self._sites.get(where)
            if site is None or site.seen.numel() != stats.units:
                site = self._sites[where] = _SiteState(stats.units)
            finite, fired = stats.observations, stats.counts > 0
            site.seen += finite
            streak_starts = ~fired & (site.silent == 0)  # silent now, fired last time (or never seen)
            site.since = torch.where(streak_starts, torch.full_like(site.since, step), site.since)
            site.before = torch.where(streak_starts, torch.full_like(site.before, previous), site.before)
            site.silent = torch.where(fired, torch.zeros_like(site.silent), site.silent + finite)
            earlier = site.fired.clone()
            site.fired |= fired
            needed = max(self.min_observations, 1)
            judged = site.seen >= needed
            dead = judged & (site.silent >= needed)
            died_pairs = sorted(zip(site.since[dead].tolist(), site.before[dead].tolist()))
            died = [int(since) for since, _ in died_pairs]
            after = f"{prefix}.{stats.after}" if prefix and stats.after else stats.after
            scans.append(UnitScan(where=where, kind=stats.kind, after=after, units=stats.units,
                                  judged=int(judged.sum()), dead=int(dead.sum()), died_steps=died,
                                  fired_before=int((dead & earlier).sum()),
                                  observations=int(site.silent[dead].min()) if died else 0,
                                  period=step - self._last_scan if self._last_scan is not None else 0,
                                  died_after_steps=[int(before) for _, before in died_pairs]))
        self._last_scan = step
        self.scans += 1
        if scans:
            self.history.unit_scans[step] = scans
        return True

    def unjudged_sites(self) -> list:
        """[(rectifier, the fewest finite observations among its units)] for the rectifiers the
        scans saw with some unit below min_observations: not enough for a dead-neurons verdict."""
        needed = max(self.min_observations, 1)
        return [(where, int(site.seen.min())) for where, site in self._sites.items()
                if int(site.seen.min()) < needed]

    def _eval_mode(self, step: int) -> None:
        """A root in eval mode at a step: its Dropout/BatchNorm modules that trained before
        (on a sampled step) and are in eval mode now. Only the root's mode is read every
        step; a model that freezes its BatchNorm on purpose keeps its root in train mode."""
        in_eval = [name for module, name in self._mode_modules.items()
                   if name is not None and not module.training]
        for module, ops in self._functional_off.items():  # the functional dropouts turned off
            if not module.training:
                name = self._functional_names.get(module)
                if name is None:
                    name = self._functional_names[module] = \
                        "" if module in self.roots else self._module_name(module)
                in_eval += [f"{name}:{op}" for op in sorted(ops)]
        if in_eval:
            self.history.eval_modules[step] = in_eval

    def _adopt_roots(self, roots: list) -> None:
        self.roots = [_eager(root) for root in roots]
        self._sharded = any(_sharded(root) for root in self.roots)
        for called, root in zip(roots, self.roots):
            prefix = "" if len(roots) == 1 else f"{type(root).__name__}."
            for name, p in root.named_parameters():
                self._names.setdefault(id(p), prefix + name)
            self._hook_entry(called)

    def _find_not_in_optimizer(self) -> None:
        """At the second step, when every optimizer of the loop has stepped once (two optimizers
        for one model: dense and sparse parameters, one per part): the roots' trainable
        parameters that none of them updates."""
        optimizers = [self.optimizer] + list(self._others.values())
        in_optimizer = {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}
        self.history.not_in_optimizer = [
            self._names[id(p)] for root in self.roots for p in root.parameters()
            if p.requires_grad and id(p) not in in_optimizer]

    def _hook_entry(self, module: nn.Module) -> None:
        self._entries.add(id(module))
        if _compiled_in_place(module):
            return  # its inputs are kept by the entry, outside the graph (a hook added would recompile it)
        self._handles.append(module.register_forward_pre_hook(_InputKeeper(self), with_kwargs=True))

    def _within_roots(self, module) -> bool:
        return any(module is root or any(m is module for m in root.modules()) for root in self.roots)

    def _module_name(self, module) -> str:
        for root in self.roots:
            for name, m in root.named_modules():
                if m is module:
                    return name or type(m).__name__
        return type(module).__name__

    def _keep_inputs(self, module, args, kwargs) -> None:
        # The first call of a step: its inputs (references, no copy) and, while the step is
        # seen to draw random numbers (see _check_rng), the RNG state, so that a non-finite
        # step can be re-run exactly. In a compiled graph (the pre-hook of a module compiled in
        # place after it was hooked) nothing: its _CompiledEntry keeps them, outside the graph.
        if _compiling():
            return
        call = self._call
        if self._busy or (call is not None and call["kwargs"] is not None) or not torch.is_grad_enabled():
            return
        rng = _rng_state() if self._rng_used is not False or self._sampled_handles else None
        # the module as called: the one to re-run (_eager, inside its wrappers) is found when needed
        self._call = {"module": module, "args": args, "kwargs": kwargs, "rng": rng}

    def _check_rng(self) -> None:
        """On a sampled step: did the step draw random numbers between its forward's start and
        now (Dropout, a random augmentation in `forward`, a sampling loss)? Until a sampled step
        says no, and for the rest of the run once one says yes, every step keeps its RNG state
        (~2 us: torch's CPU generator, a Mersenne Twister, has no cheap offset to keep instead;
        CUDA's state is a seed and an offset); a run whose sampled steps draw none keeps none,
        and its re-run starts from the RNG as the step leaves it, which its forward does not read."""
        call = self._call
        if self._rng_used is True or call is None or call["rng"] is None:
            return
        self._rng_used = not _rng_equal(call["rng"], _rng_state())

    # ------------------------------------------------------------------ localisation

    def _localise(self, step: int, loss: float, norm: Optional[float], params: list) -> NonFiniteEvent:
        """Re-run this step's forward and backward under the tracer, before its update."""
        event = NonFiniteEvent(step=step, kind="gradient", loss=_finite_or_none(loss), grad_norm=norm,
                               reproduced=False)
        if not math.isfinite(loss):
            event.loss = loss
        event.params = [self._names.get(id(p), "?") for p in params
                        if p.grad is not None and not bool(torch.isfinite(_local(p.grad)).all())]
        broken = [(self._names.get(id(p), "?"), p) for p in params if not bool(torch.isfinite(_local(p)).all())]
        if broken:
            ranks = _ranks()
            if ranks:  # the update that made them used gradients all-reduced over the ranks
                event.rank, event.world_size = ranks
            event.kind, event.where, event.value = "parameter", broken[0][0], _kind_of(_local(broken[0][1]))
            event.params, event.reproduced = [n for n, _ in broken], True
            return event
        call = self._call
        if call is None or call["kwargs"] is None:
            return event
        bad_input = _nonfinite_argument(call["args"], call["kwargs"])
        if bad_input is not None:
            event.input_name, tensor = bad_input
            event.kind, event.value, event.reproduced = "input", _kind_of(tensor), True
            event.input_count, event.input_size = int((~torch.isfinite(tensor)).sum()), tensor.numel()
            return event
        if self._sharded:
            self.notes.append("the non-finite step was not re-run: the model is sharded (FSDP), and its "
                              "forward gathers the parameters from the other ranks")
            ranks = _ranks()
            if ranks and math.isfinite(loss):  # its inputs and loss finite: see below
                event.kind, event.scope, event.reproduced = "all-reduce", "ranks", False
                event.rank, event.world_size = ranks
            return event
        module = _eager(call["module"])
        saved_grads = [(p, p.grad) for p in module.parameters()]
        buffers = [(b, b.detach().clone()) for b in module.buffers()]
        rng = _rng_state()
        self._busy = True
        tracer = _Tracer(module)
        try:
            for p, _ in saved_grads:
                p.grad = None
            if call["rng"] is not None:
                _set_rng_state(call["rng"])
            with tracer, _run_eagerly(module):
                out = module(*call["args"], **call["kwargs"])
            found = tracer.first_op
            if found is None and tracer.first_module is not None:
                found = {"module": tracer.first_module, "op": None, "source": None,
                         "value": tracer.first_module_value}
            if found is not None:
                event.kind = "forward"
            else:
                # The model's output is finite: the NaN is in the loss or in the backward. Back-
                # propagate a unit gradient from each output: a node whose incoming gradient is
                # finite and outgoing is not is the model's own (the loss is not re-run).
                outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad]
                for t in outs:
                    tracer.hook_backward(t)
                if outs:
                    torch.autograd.backward([t.float().sum() for t in outs])
                found = tracer.first_backward
                event.kind = "backward" if found is not None else "loss"
                if found is None:
                    event.scope = "loss"
                    ranks = _ranks()
                    if ranks and math.isfinite(loss) and all(
                            p.grad is None or bool(torch.isfinite(p.grad).all()) for p in module.parameters()):
                        # This rank's step is finite all through (its loss, the re-run's forward and
                        # backward): DDP's all-reduce averaged in another rank's NaN/Inf gradients.
                        event.kind, event.scope = "all-reduce", "ranks"
                        event.rank, event.world_size = ranks
            event.reproduced = True
            if found is not None:
                event.where = found["module"] or None
                event.scope = "model" if found["module"] else "loss"
                event.op, event.source, event.value = found["op"], found["source"], found["value"]
            if event.scope == "loss":
                event.loss_op, event.ignore_index = _loss_op(self._loss_node)
        except Exception as exc:  # the re-run must never break the user's run
            self.notes.append(f"the non-finite step could not be re-run: {type(exc).__name__}: {exc}")
        finally:
            tracer.remove()
            for p, g in saved_grads:
                p.grad = g
            with torch.no_grad():
                for b, value in buffers:
                    b.copy_(value)
            _set_rng_state(rng)
            self._busy = False
        return event


def _nonfinite_argument(args: tuple, kwargs: dict) -> Optional[tuple]:
    """(the argument's name, its first non-finite tensor) of a forward's inputs, or None."""
    named = [(f"args[{i}]", a) for i, a in enumerate(args)] + [(k, v) for k, v in kwargs.items()]
    for name, value in named:
        tensor = _nonfinite_leaf(value)
        if tensor is not None:
            return name, tensor
    return None


def _loss_op(node) -> tuple:
    """(the op of an autograd node, as its functional name: NllLossBackward0 -> nll_loss, and
    nll_loss's ignore_index when it averages), or (None, None)."""
    if node is None:
        return None, None
    op = re.sub(r"(?<!^)(?=[A-Z])", "_", node_name(node)).lower() or None
    ignore_index = None
    if op == "nll_loss" and getattr(node, "_saved_reduction", None) == 1:  # 1: "mean"
        index = getattr(node, "_saved_ignore_index", None)  # an int64 read back as unsigned
        if isinstance(index, int):
            ignore_index = index - 2 ** 64 if index >= 2 ** 63 else index
    return op, ignore_index


def _rng_state() -> tuple:
    """The CPU generator's state and, once CUDA is in use, each CUDA device's (seed and offset)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def _rng_equal(a: tuple, b: tuple) -> bool:
    if not torch.equal(a[0], b[0]) or (a[1] is None) != (b[1] is None):
        return False
    return a[1] is None or (len(a[1]) == len(b[1]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1])))


_compiling = torch.compiler.is_compiling


def _is_compiled(module: nn.Module) -> bool:
    """torch.compile's wrapper, or a module compiled in place whose call the watcher wraps."""
    return type(module).__name__ == "OptimizedModule" or _compiled_in_place(module)


def _compiled_in_place(module: nn.Module) -> bool:
    """module.compile() while watching: its compiled call is the watcher's _CompiledEntry."""
    return isinstance(module.__dict__.get("_compiled_call_impl"), _CompiledEntry)


@contextlib.contextmanager
def _run_eagerly(module: nn.Module) -> Iterator[None]:
    """The watcher's own re-runs (the activation scan, the NaN tracer) need the module's forward
    eager, its hooks live: a module compiled in place is called uncompiled meanwhile."""
    compiled = module.__dict__.get("_compiled_call_impl")
    if compiled is None:
        yield
        return
    module._compiled_call_impl = None
    try:
        yield
    finally:
        module._compiled_call_impl = compiled


class _CompiledEntry:
    """Stands in for the compiled call of a module compiled in place while watching: before
    and after the compiled graph runs, outside it, it does what the module's hooks would (the
    global ones of a sampled step: _enter/_leave; the input keeper's, for an entry module)."""

    __slots__ = ("probe", "module", "compiled")

    def __init__(self, probe: LiveProbe, module: nn.Module, compiled) -> None:
        self.probe, self.module, self.compiled = probe, module, compiled

    def __call__(self, *args, **kwargs):
        probe, module = self.probe, self.module
        if _compiling():
            return self.compiled(*args, **kwargs)
        sampled = bool(probe._sampled_handles)
        if sampled:
            probe._enter(module, args)
        if id(module) in probe._entries:
            probe._keep_inputs(module, args, kwargs)
        out = self.compiled(*args, **kwargs)
        if sampled:
            probe._leave(module, args, out)
        return out

    def __deepcopy__(self, memo):  # a copy of the model (the best so far, an EMA) is not watched
        return self.compiled


def _eager(module: nn.Module) -> nn.Module:
    """The user's own module inside the wrappers: torch.compile's (the watcher keeps the inputs
    of the compiled module, whose hooks run eagerly, but names, judges and re-runs the original,
    whose mode the user sets and whose forward runs eagerly under the tracer and the scan) and
    DistributedDataParallel's or DataParallel's (their forward syncs buffers across the ranks
    and their backward all-reduces: a re-run on one rank only would pair with another rank's
    next step and desynchronise the run; the module inside computes the same locally). Names
    are then the model's own, without DDP's `module.` prefix."""
    while True:
        if type(module).__name__ == "OptimizedModule":
            module = getattr(module, "_orig_mod", module)
        elif isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        else:
            return module


def _sharded(module: nn.Module) -> bool:
    """FSDP (either version) or DTensor parameters: the forward gathers the shards from the other
    ranks, so no re-run on one rank alone is possible."""
    for m in module.modules():
        if any(cls.__name__ in ("FullyShardedDataParallel", "FSDPModule") for cls in type(m).__mro__):
            return True
    return any(type(p).__name__ == "DTensor" for p in module.parameters())


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (FSDP2's parameters and gradients), the tensor itself
    otherwise: reading a DTensor's value (a norm's, `isfinite().all()`'s) gathers it from the
    other ranks, a collective on this rank alone."""
    return t.to_local() if hasattr(t, "to_local") else t


def _ranks() -> Optional[tuple]:
    """(this rank, the world size) in a default process group of more than one rank, else None."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return dist.get_rank(), dist.get_world_size()


class _InputKeeper:
    """The forward pre-hook that keeps a step's inputs (LiveProbe._keep_inputs), the one hook the
    watcher leaves on the user's modules. Scripts copy and pickle their model mid-run
    (`copy.deepcopy` for the best model so far, SWA's `AveragedModel`, an EMA made late,
    `torch.save(model)`): the copy must not take the watcher along, which holds the run's history
    and patched functions that do not pickle. `nn.Module.__getstate__`, wrapped while watching
    (_wrap_getstate), leaves it out of the copied or pickled state; a subclass whose own
    `__getstate__` does not call it still copies this hook as one that does nothing."""

    __slots__ = ("probe",)

    def __init__(self, probe: Optional[LiveProbe]) -> None:
        self.probe = probe

    def __call__(self, module, args, kwargs) -> None:
        if self.probe is not None:
            self.probe._keep_inputs(module, args, kwargs)

    def __deepcopy__(self, memo) -> _InputKeeper:
        return _InputKeeper(None)

    def __reduce__(self) -> tuple:
        return _InputKeeper, (None,)


def _wrap_getstate(original):
    def __getstate__(module):
        state = original(module)
        hooks = state.get("_forward_pre_hooks")
        if hooks and any(isinstance(h, _InputKeeper) for h in hooks.values()):
            ours = [k for k, h in hooks.items() if isinstance(h, _InputKeeper)]
            state["_forward_pre_hooks"] = type(hooks)((k, h) for k, h in hooks.items() if k not in ours)
            with_kwargs = state.get("_forward_pre_hooks_with_kwargs")
            if with_kwargs is not None:
                state["_forward_pre_hooks_with_kwargs"] = type(with_kwargs)(
                    (k, v) for k, v in with_kwargs.items() if k not in ours)
        return state
    __getstate__.__wrapped__ = original
    return __getstate__


def _trained(optimizer) -> bool:
    """Whether the optimizer has state from steps already taken: torch's optimizers create it
    at their first step, except Adagrad, which creates it in __init__ at step 0."""
    state = next((s for s in optimizer.state.values() if s), None)
    if state is None:
        return False
    step = state.get("step")
    return step is None or float(step) > 0


def _detached(loss: Any) -> torch.Tensor:
    return loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))


def _f32(t: torch.Tensor) -> torch.Tensor:
    # checked in Python first: a reshape or a cast is a device op (~9 us on a CPU)
    if t.dim() != 0:
        t = t.reshape(())
    return t if t.dtype == torch.float32 else t.float()


def _finite_or_none(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None
