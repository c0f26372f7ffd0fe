"""Watching the user's own training loop through torch's global hooks (SPEC §8).

What is attached while a `Watcher` runs, all removed in `stop()`:

- global optimizer step pre/post hooks: a step is one step of the primary
  optimizer (the one given, else the first that steps), so gradient accumulation
  counts once. At the pre-hook (before the update) the step's loss and total
  gradient norm are read with ONE host sync; with a closure (LBFGS, Lightning's
  automatic optimisation runs forward and backward inside `step`), at the post-hook;
- `torch.Tensor.backward`, wrapped: the scalar it is called on is the step's loss
  (kept as a detached device tensor until the step's sync); a loss that
  `GradScaler.scale` made is replaced by the unscaled one;
- `GradScaler.scale/unscale_/step/update`, wrapped: a `scaler.step` that did not
  reach the optimizer's step is a skipped step; `clip_grad_norm_` (wrapped too)
  while a scaled backward has not been unscaled is clip-before-unscale;
- on sampled steps only (every `every`-th), global module forward hooks: which
  modules run the forward (the model's root, found once, and its Dropout/BatchNorm
  modules), and on the roots one forward pre-hook kept for the whole run, which
  keeps the step's inputs and RNG state so that a non-finite step can be re-run
  under `instrument._Tracer` before its update is applied.

Judging is `judge.py`'s; this module only measures.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import torch
import torch.nn as nn
from torch.utils._pytree import tree_leaves

from ..probes.train_run import _kind_of, _nonfinite_leaf, _Tracer
from ..report.codes import SEVERITY_ORDER
from ..report.findings import CheckResult, Report, status_from_findings
from .errors import StopWatching, TrainingBug
from .judge import History, Judge, NonFiniteEvent

DEFAULT_EVERY = 50
# Steps between two runs of the judges when no finding must stop the loop at once: their
# Python (a few comparisons per code) costs ~5% of a tiny MLP's step when run every step.
JUDGE_EVERY = 10
# Modules whose train/eval mode changes what the forward computes: the ones that make
# eval-mode-in-training a bug rather than a no-op.
MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)

_active: Optional[Watcher] = None


class Watcher:
    """Observe training steps until `stop()`; `report` says what was found."""

    def __init__(self, model: Optional[nn.Module] = None, optimizer: Any = None, *,
                 every: int = DEFAULT_EVERY, fail_on: Optional[str] = None,
                 max_steps: Optional[int] = None, max_seconds: Optional[float] = None,
                 target: Optional[str] = None):
        if int(every) < 1:
            raise ValueError(f"every must be at least 1, not {every}")
        if fail_on is not None and fail_on not in SEVERITY_ORDER:
            raise ValueError(f"fail_on must be error, warning or info, not {fail_on!r}")
        self.every, self.fail_on = int(every), fail_on
        self.max_steps, self.max_seconds, self.target = max_steps, max_seconds, target
        self.optimizer = optimizer
        self.roots: list = [model] if model is not None else []
        self.history = History(every=self.every)
        self.judge = Judge(self.history)
        self.started = 0.0
        self.seconds = 0.0
        self.interrupted = False
        self.notes: list = []
        self._undo: list = []  # (object, attribute, original) patches
        self._handles: list = []  # hook handles for the whole run
        self._sampled_handles: list = []  # global module hooks of the current sampled step
        self._losses: list = []  # detached loss tensors since the last step
        self._scaled: dict = {}  # id(scaled loss) -> unscaled loss
        self._scaled_pending = None  # the GradScaler of a scaled backward not yet unscaled
        self._busy = False  # our own re-run: ignore hooks
        self._stepped = False  # the primary optimizer's step ran (inside scaler.step)
        self._mode_modules: dict = {}  # Dropout/BatchNorm module -> path, seen training
        self._candidates: list = []  # modules called at the top level on a sampled step
        self._call: Optional[dict] = None  # the root's forward inputs of this step
        self._stack: list = []
        self._params_cache: tuple = (None, None, [])
        self._names: dict = {}  # id(param) -> name within the roots
        self._closure_step = False
        self._unjudged: list = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Watcher:
        global _active
        if _active is not None:
            raise RuntimeError("nndoctor is already watching a run (one watcher at a time)")
        _active = self
        self.started = time.perf_counter()
        try:
            self._install()
        except BaseException:
            self.stop()
            raise
        if self.roots:
            self._adopt_roots(self.roots)
        self._begin_step()
        return self

    def stop(self) -> None:
        global _active
        self._end_sampled()
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for obj, attr, original in reversed(self._undo):
            setattr(obj, attr, original)
        self._undo = []
        if _active is self:
            _active = None
            self.seconds = time.perf_counter() - self.started
            for step in self._unjudged:
                self.judge.on_step(step)
            self._unjudged = []
            self.judge.finish()

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self.stop()
        return exc_type is not None and issubclass(exc_type, StopWatching)

    # ------------------------------------------------------------------ the user's side

    def log(self, loss: Any = None, val_loss: Any = None) -> None:
        """Tell the watcher a step's loss (overrides the one seen through backward) or a
        validation loss (feeds `overfitting`)."""
        if loss is not None:
            self._losses = [_detached(loss)]
        if val_loss is not None:
            value = float(val_loss)
            self.history.val_losses.append((max(0, self.history.steps - 1), value))

    @property
    def report(self) -> Report:
        findings = sorted(self.judge.findings, key=lambda f: f.evidence.get("step", 0))
        h = self.history
        check = CheckResult(name="watch", status=status_from_findings(findings),
                            seconds=self.seconds or (time.perf_counter() - self.started),
                            findings=findings,
                            metrics={"steps": h.steps, "skipped_steps": sum(h.skipped),
                                     "every": self.every})
        report = Report(target=self.target, seconds=check.seconds, checks=[check],
                        notes=list(self.notes), interrupted=self.interrupted)
        report.sections["watch"] = {"steps": h.steps, "skipped_steps": sum(h.skipped), "every": self.every,
                                    "losses": [_round(v) for v in h.losses]}
        return report

    # ------------------------------------------------------------------ installation

    def _patch(self, obj: Any, attr: str, make) -> None:
        original = getattr(obj, attr)
        self._undo.append((obj, attr, original))
        setattr(obj, attr, make(original))

    def _install(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        self._handles.append(register_optimizer_step_pre_hook(self._pre_step))
        self._handles.append(register_optimizer_step_post_hook(self._post_step))
        self._patch(torch.Tensor, "backward", self._wrap_backward)
        scaler = torch.amp.GradScaler
        self._patch(scaler, "scale", self._wrap_scale)
        self._patch(scaler, "unscale_", self._wrap_unscale)
        self._patch(scaler, "step", self._wrap_scaler_step)
        clip = torch.nn.utils.clip_grad
        for owner in (torch.nn.utils, clip):
            self._patch(owner, "clip_grad_norm_", self._wrap_clip)
            self._patch(owner, "clip_grad_value_", self._wrap_clip)

    def _wrap_backward(self, original):
        watcher = self

        def backward(tensor, *args, **kwargs):
            if not watcher._busy and tensor.numel() == 1:
                unscaled, scaler = watcher._scaled.pop(id(tensor), (None, None))
                if unscaled is not None:
                    watcher._scaled_pending = scaler
                    watcher.history.scaler_seen = True
                watcher._losses.append(_detached(unscaled if unscaled is not None else tensor))
            return original(tensor, *args, **kwargs)
        backward.__wrapped__ = original
        return backward

    def _wrap_scale(self, original):
        watcher = self

        def scale(scaler, outputs):
            scaled = original(scaler, outputs)
            if isinstance(scaled, torch.Tensor) and scaled is not outputs:
                watcher._scaled[id(scaled)] = (outputs, scaler)
            return scaled
        return scale

    def _wrap_unscale(self, original):
        watcher = self

        def unscale_(scaler, optimizer):
            watcher._scaled_pending = None
            return original(scaler, optimizer)
        return unscale_

    def _wrap_scaler_step(self, original):
        watcher = self

        def step(scaler, optimizer, *args, **kwargs):
            primary = watcher.optimizer is None or optimizer is watcher.optimizer
            watcher._stepped = False
            result = original(scaler, optimizer, *args, **kwargs)
            watcher._scaled_pending = None
            if primary and not watcher._stepped and scaler.is_enabled():
                watcher.optimizer = watcher.optimizer or optimizer
                watcher._record(optimizer, skipped=True)
                watcher._end_step()
            return result
        return step

    def _wrap_clip(self, original):
        watcher = self

        def clip(*args, **kwargs):
            scaler = watcher._scaled_pending
            if scaler is not None and not watcher._busy:
                if not watcher.history.clip_scaled:  # the scale, read once (a sync)
                    watcher.history.clip_scale = scaler.get_scale()
                watcher.history.clip_scaled.append(watcher.history.steps)
            return original(*args, **kwargs)
        clip.__wrapped__ = original
        return clip

    # ------------------------------------------------------------------ steps

    def _pre_step(self, optimizer, args, kwargs) -> None:
        if self._busy or not self._is_primary(optimizer):
            return
        self._stepped = True
        self._closure_step = bool(args and callable(args[0])) or callable(kwargs.get("closure"))
        if not self._closure_step:  # the gradients are there now, before the update
            self._record(optimizer, skipped=False)

    def _post_step(self, optimizer, args, kwargs) -> None:
        if self._busy or not self._is_primary(optimizer):
            return
        if self._closure_step:  # forward and backward ran inside step(): measured after it
            self._record(optimizer, skipped=False)
        self._end_step()

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
        """One step's loss, gradient norm and LR, with one host sync; then the judges."""
        h = self.history
        step = h.steps
        sampled = step % self.every == 0
        params, one_device = self._params(optimizer)
        grads = [] if skipped else [p.grad for p in params if p.grad is not None]
        if any(g.is_sparse for g in grads):
            grads = [g.coalesce().values() if g.is_sparse else g for g in grads]
        losses = self._losses
        self._losses = []
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
        values = torch.stack(parts).tolist() if parts else []  # the step's one host sync
        loss = values.pop(0) if losses else math.nan
        norm = math.sqrt(math.fsum(v * v for v in values)) if grads else (None if skipped else 0.0)
        lr = max((float(g["lr"]) for g in optimizer.param_groups if "lr" in g), default=None)
        h.losses.append(loss)
        h.grad_norms.append(norm)
        h.lrs.append(lr)
        h.skipped.append(skipped)
        if sampled and not skipped:
            self._sample(params, values)
        if not skipped and any(not root.training for root in self.roots):
            self._eval_mode(step)
        # Under a GradScaler inf/NaN gradients are its business (it skips the step): those are
        # judged as amp-skipped-steps, never as non-finite.
        if not skipped and not h.scaler_seen and h.nonfinite is None and not (
                math.isfinite(loss) and (norm is None or math.isfinite(norm))):
            h.nonfinite = self._localise(step, loss, norm, params)
        self._judge(step)

    def _judge(self, step: int) -> None:
        # Without fail_on nothing needs a finding at once: the judges run every JUDGE_EVERY
        # steps over the steps since (each finding still carries its own step).
        self._unjudged.append(step)
        if self.fail_on is None and len(self._unjudged) < JUDGE_EVERY and self.history.nonfinite is None:
            return
        new = [f for s in self._unjudged for f in self.judge.on_step(s)]
        self._unjudged = []
        if self.fail_on is None:
            return
        bar = SEVERITY_ORDER[self.fail_on]
        for finding in new:
            if SEVERITY_ORDER[finding.severity] >= bar:
                raise TrainingBug(finding)

    def _end_step(self) -> None:
        self._end_sampled()
        self._scaled.clear()
        self._call = None
        steps = self.history.steps
        if self.max_steps is not None and steps >= self.max_steps:
            raise StopWatching(f"--max-steps {self.max_steps} reached")
        if self.max_seconds is not None and time.perf_counter() - self.started > self.max_seconds:
            raise StopWatching(f"--max-seconds {self.max_seconds:g} reached")
        self._begin_step()

    # ------------------------------------------------------------------ sampled steps

    def _begin_step(self) -> None:
        if self.history.steps % self.every != 0:
            return
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        self._stack = []
        self._sampled_handles = [register_module_forward_pre_hook(self._enter),
                                 register_module_forward_hook(self._leave, always_call=True)]

    def _end_sampled(self) -> None:
        for handle in self._sampled_handles:
            handle.remove()
        self._sampled_handles = []

    def _enter(self, module, args) -> None:
        if self._busy or not torch.is_grad_enabled():
            return
        if not self._stack and not self.roots and module not in self._candidates:
            self._candidates.append(module)
        self._stack.append(module)
        if module.training and isinstance(module, MODE_DEPENDENT) and module not in self._mode_modules:
            self._mode_modules[module] = None  # named when the roots are known

    def _leave(self, module, args, output) -> None:
        if self._stack and self._stack[-1] is module:
            self._stack.pop()

    def _sample(self, params: list, norms: list) -> None:
        """At a sampled step: find the roots (once), note parameters without gradient and
        Dropout/BatchNorm modules that trained before and are in eval mode now."""
        h = self.history
        h.steps - 1
        if not self.roots:
            in_optimizer = {id(p) for p in params}
            roots = [m for m in self._candidates if any(id(p) in in_optimizer for p in m.parameters())]
            if roots:
                self._adopt_roots(roots)
        self._candidates = []
        h.samples += 1
        with_grad = [p for p in params if p.grad is not None]
        zero = {id(p) for p, n in zip(with_grad, norms) if n == 0.0}
        for p in params:
            if p.requires_grad and (p.grad is None or id(p) in zero):
                name = self._names.get(id(p), f"param{params.index(p)}")
                h.no_grad_samples[name] = h.no_grad_samples.get(name, 0) + 1
        for module in list(self._mode_modules):
            if self._mode_modules[module] is None:
                self._mode_modules[module] = self._module_name(module)

    def _eval_mode(self, step: int) -> None:
        """A root in eval mode at a step: its Dropout/BatchNorm modules that trained before
        (on a sampled step) and are in eval mode now. Only the root's mode is read every
        step; a model that freezes its BatchNorm on purpose keeps its root in train mode."""
        in_eval = [name for module, name in self._mode_modules.items()
                   if name is not None and not module.training]
        if in_eval:
            self.history.eval_modules[step] = in_eval

    def _adopt_roots(self, roots: list) -> None:
        self.roots = roots
        for root in roots:
            prefix = "" if len(roots) == 1 else f"{type(root).__name__}."
            for name, p in root.named_parameters():
                self._names.setdefault(id(p), prefix + name)
            self._handles.append(root.register_forward_pre_hook(self._keep_inputs, with_kwargs=True))
        if self.optimizer is not None:
            in_optimizer = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
            self.history.not_in_optimizer = [
                self._names[id(p)] for root in roots for p in root.parameters()
                if p.requires_grad and id(p) not in in_optimizer]

    def _module_name(self, module) -> str:
        for root in self.roots:
            for name, m in root.named_modules():
                if m is module:
                    return name or type(m).__name__
        return type(module).__name__

    def _keep_inputs(self, module, args, kwargs) -> None:
        # The first call of a step: its inputs (references, no copy) and RNG state, so
        # that a non-finite step can be re-run exactly.
        if self._busy or self._call is not None or not torch.is_grad_enabled():
            return
        self._call = {"module": module, "args": args, "kwargs": kwargs, "rng": torch.get_rng_state()}

    # ------------------------------------------------------------------ localisation

    def _localise(self, step: int, loss: float, norm: Optional[float], params: list) -> NonFiniteEvent:
        """Re-run this step's forward and backward under the tracer, before its update."""
        event = NonFiniteEvent(step=step, kind="gradient", loss=_finite_or_none(loss), grad_norm=norm,
                               reproduced=False)
        if not math.isfinite(loss):
            event.loss = loss
        event.params = [self._names.get(id(p), "?") for p in params
                        if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        broken = [(self._names.get(id(p), "?"), p) for p in params if not bool(torch.isfinite(p).all())]
        if broken:
            event.kind, event.where, event.value = "parameter", broken[0][0], _kind_of(broken[0][1])
            event.params, event.reproduced = [n for n, _ in broken], True
            return event
        call = self._call
        if call is None:
            return event
        if _nonfinite_leaf((call["args"], call["kwargs"])) is not None:
            event.kind, event.value, event.reproduced = "input", _kind_of(
                _nonfinite_leaf((call["args"], call["kwargs"]))), True
            return event
        module = call["module"]
        saved_grads = [(p, p.grad) for p in module.parameters()]
        buffers = [(b, b.detach().clone()) for b in module.buffers()]
        rng = torch.get_rng_state()
        self._busy = True
        tracer = _Tracer(module)
        try:
            for p, _ in saved_grads:
                p.grad = None
            torch.set_rng_state(call["rng"])
            with tracer:
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
            event.reproduced = True
            if found is not None:
                event.where = found["module"] or None
                event.scope = "model" if found["module"] else "loss"
                event.op, event.source, event.value = found["op"], found["source"], found["value"]
        except Exception as exc:  # the re-run must never break the user's run
            self.notes.append(f"the non-finite step could not be re-run: {type(exc).__name__}: {exc}")
        finally:
            tracer.remove()
            for p, g in saved_grads:
                p.grad = g
            with torch.no_grad():
                for b, value in buffers:
                    b.copy_(value)
            torch.set_rng_state(rng)
            self._busy = False
        return event


def _detached(loss: Any) -> torch.Tensor:
    return loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))


def _f32(t: torch.Tensor) -> torch.Tensor:
    # checked in Python first: a reshape or a cast is a device op (~9 us on a CPU)
    if t.dim() != 0:
        t = t.reshape(())
    return t if t.dtype == torch.float32 else t.float()


def _finite_or_none(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None


def _round(x: float) -> Any:
    return x if not math.isfinite(x) else float(f"{x:.6g}")
