"""The LR range test (Smith 2015; fastai's `lr_find`) on torch-lr-finder, and the race's trainer.

Measuring only (checks/lr_find.py judges): both take a model, an optimizer (or a factory
`params -> optimizer`), batches and `loss_fn(batch) -> scalar`, not a Session, so they work
on any training loop, and put the model, the optimizer and the train/eval modes back in
`finally`.

torch-lr-finder's `LRFinder.range_test` trains the model for `num_iter` steps while the LR
grows exponentially from `start_lr` to `end_lr`, recording the loss smoothed with an EMA
(`smooth_f`) and stopping when it passes `diverge_th` x its best. We wrap it so the user
sees only nndoctor:

- its `tqdm` bar is replaced by the caller's `tick()` and its `print`s are captured (we
  shadow the two names in its module while it runs);
- batches go through its `TrainDataLoaderIter` hook whole, and a wrapper module computes
  `loss_fn(batch)`, so every batch form works; the finder's criterion passes that loss through;
- it cycles through the given batches (deterministic, bounded in memory);
- its `reset()` restores the model and optimizer; the modes are put back here.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
import torch.nn as nn

from ..engine.session import rng_state, set_rng_state
from .tracer import modes_kept

OptimizerOrFactory = Union[torch.optim.Optimizer, Callable[[Any], torch.optim.Optimizer]]


@dataclass
class Curve:
    """What the range test recorded (torch-lr-finder's history) and how it ended."""

    lrs: list
    losses: list  # smoothed as torch-lr-finder smooths them
    num_iter: int  # asked for
    stop: Optional[str] = None  # None (ran to the end), "diverged" or "non-finite"
    messages: list = field(default_factory=list)  # what torch-lr-finder printed (kept out of sight)


def optimizer_for(model: nn.Module, optimizer: OptimizerOrFactory) -> torch.optim.Optimizer:
    """The optimizer itself, or a new one from the factory over the model's parameters."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    return optimizer(model.parameters())


class _LossModel(nn.Module):
    """What LRFinder trains: takes a whole batch, returns `loss_fn(batch)`.

    The user's model is a registered submodule, so the finder's state_dict cache and
    reset() cover exactly its parameters and buffers."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[Any], torch.Tensor]):
        super().__init__()
        self.model = model
        self._loss = loss_fn  # a function, not a module: not part of the state

    def forward(self, batch: Any) -> torch.Tensor:
        return self._loss(batch)


def _passthrough_criterion(loss: torch.Tensor, _labels: Any) -> torch.Tensor:
    return loss


def range_test(model: nn.Module, optimizer: OptimizerOrFactory, batches: list,
               loss_fn: Callable[[Any], torch.Tensor], *, start_lr: float, end_lr: float,
               num_iter: int, step_mode: str = "exp", smooth_f: float = 0.05, diverge_th: float = 5,
               device: Union[str, torch.device, None] = None, cache_on_disk: bool = False,
               cache_dir: Optional[str] = None, tick: Callable[[], Any] = lambda: None) -> Curve:
    """torch-lr-finder's range test over `batches` (cycled); `loss_fn(batch)` computes the
    loss with `model`. The model's weights and buffers, the optimizer's state and LRs and
    every module's mode are as before when it returns. `tick()` is called once a step."""
    tlf = _import_lr_finder()  # lazy, and without the matplotlib.pyplot it imports
    if num_iter < 2:
        raise ValueError(f"lr-find.num_iter must be at least 2, not {num_iter}")

    # a variable for mypy: a base class given as an attribute of a local isn't a type to it
    loader_iter: Any = tlf.TrainDataLoaderIter

    class BatchIter(loader_iter):
        # torch-lr-finder's hook for batches that are not (inputs, labels): the whole batch is
        # the "input" (no .to(): its _move_to_device leaves it alone; it is on the device).
        def inputs_labels_from_batch(self, batch_data):
            return batch_data, None

    opt = optimizer_for(model, optimizer)
    # A scheduler attached to the optimizer leaves "initial_lr" in its groups, and LRFinder
    # refuses such an optimizer; put back after.
    initial_lrs = [group.pop("initial_lr", None) for group in opt.param_groups]
    messages: list = []

    def capture_print(*args, **kwargs):
        messages.append(" ".join(str(a) for a in args))

    with modes_kept(model):
        finder = tlf.LRFinder(_LossModel(model, loss_fn), opt, _passthrough_criterion,
                              device=device, memory_cache=not cache_on_disk, cache_dir=cache_dir)
        try:
            def steps(iterable):  # stands in for tqdm(range(num_iter))
                for i in iterable:
                    yield i
                    tick()
                    history = finder.history["loss"]
                    if history and not math.isfinite(history[-1]):
                        return  # torch-lr-finder would go on with NaN for every remaining step

            with _patched(tlf, tqdm=steps, print=capture_print), warnings.catch_warnings():
                # Its schedulers call get_lr() directly; torch warns about that on every step.
                warnings.filterwarnings("ignore", message=r".*get_last_lr\(\).*")
                warnings.filterwarnings("ignore", message=r".*lr_scheduler.step\(\).*")
                finder.range_test(BatchIter(batches), start_lr=float(start_lr), end_lr=float(end_lr),
                                  num_iter=int(num_iter), step_mode=str(step_mode),
                                  smooth_f=float(smooth_f), diverge_th=float(diverge_th))
        finally:
            # Free the gradients and the optimizer's state before reset() loads its copy back:
            # with it cached on disk, that keeps the peak at one extra copy of the weights.
            opt.zero_grad(set_to_none=True)
            opt.state.clear()
            finder.reset()
            for group, initial in zip(opt.param_groups, initial_lrs):
                if initial is not None:
                    group["initial_lr"] = initial
    lrs, losses = list(finder.history["lr"]), [float(v) for v in finder.history["loss"]]
    stop = None
    if losses and not math.isfinite(losses[-1]):
        stop = "non-finite"
    elif any("diverged" in m for m in messages):
        stop = "diverged"
    return Curve(lrs=lrs, losses=losses, num_iter=int(num_iter), stop=stop, messages=messages)


class _LazyPyplot(types.ModuleType):
    """Stands in for `matplotlib.pyplot` in torch-lr-finder's module, which imports it at
    module level but uses it only in `LRFinder.plot()` (nndoctor draws its own plot, on
    demand): the real pyplot is imported on first use. Importing it costs ~0.5-0.9 s, more
    than the whole range test on a small model (bench/bench.py)."""

    def __getattr__(self, name: str) -> Any:
        import matplotlib.pyplot as plt

        return getattr(plt, name)


def _import_lr_finder() -> types.ModuleType:
    """`torch_lr_finder.lr_finder`, imported with a lazy pyplot unless matplotlib.pyplot is
    already loaded. The stand-ins are in sys.modules only while that one module imports."""
    loaded = sys.modules.get("torch_lr_finder.lr_finder")
    if loaded is not None:
        return loaded
    if "matplotlib.pyplot" in sys.modules:
        import torch_lr_finder.lr_finder as tlf

        return tlf
    pyplot = _LazyPyplot("matplotlib.pyplot")
    stand_ins: dict[str, types.ModuleType] = {"matplotlib.pyplot": pyplot}
    if "matplotlib" not in sys.modules:
        package = types.ModuleType("matplotlib")
        package.__path__ = []  # a package, for `import matplotlib.pyplot`
        package.pyplot = pyplot  # type: ignore[attr-defined]
        stand_ins["matplotlib"] = package
    sys.modules.update(stand_ins)
    try:
        import torch_lr_finder.lr_finder as tlf
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return tlf


@contextlib.contextmanager
def _patched(module: types.ModuleType, **names: Any) -> Iterator[None]:
    """Shadow module-level names (its `tqdm`, the builtin `print`) while a block runs."""
    missing = object()
    saved = {name: module.__dict__.get(name, missing) for name in names}
    module.__dict__.update(names)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = value


class RaceTrainer:
    """Trains one model for the race: each entrant (anything with `.lr` and `.steps`) from
    the same initial weights, optimizer state and RNG state, on the same batches in the same
    order, every group's LR scaled together (the ratio of group 0's LR to the entrant's). No
    scheduler is stepped. Each entrant's state between its rounds is kept in memory, or on
    disk (`directory`) for large models. `close()` puts the model, optimizer, gradients,
    modes and RNGs back bit-for-bit.

    Takes a model, an optimizer (or a factory), batches and `loss_fn(batch) -> scalar`."""

    def __init__(self, model: nn.Module, optimizer: OptimizerOrFactory, batches: list,
                 loss_fn: Callable[[Any], torch.Tensor], directory: Optional[str] = None,
                 tick: Callable[[], Any] = lambda: None):
        self.model, self.batches, self.loss_fn = model, batches, loss_fn
        self.optimizer = optimizer_for(model, optimizer)
        self.directory, self.tick = directory, tick
        self.base_lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        self.grads = {n: (p.grad.detach().clone() if p.grad is not None else None)
                      for n, p in model.named_parameters()}
        self.training = {n: m.training for n, m in model.named_modules()}
        self.rng = rng_state()
        self.initial: Optional[dict] = self._capture()
        self.saved: dict[int, Any] = {}

    def _capture(self) -> dict:
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()), "rng": rng_state()}

    def _store(self, key: int, state: dict) -> None:
        if self.directory is None:
            self.saved[key] = state
            return
        path = os.path.join(self.directory, f"entrant{key}.pt")
        torch.save(state, path)
        self.saved[key] = path

    def _load(self, state: Any) -> None:
        if isinstance(state, str):
            state = torch.load(state, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        set_rng_state(state["rng"])

    def set_lr(self, lr: float) -> None:
        reference = self.base_lrs[0]
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = lr * base / reference if reference > 0 else lr

    def advance(self, entrant: Any, steps: int) -> list:
        """Train `entrant` (its `.lr`) `steps` more steps from where it stopped (its `.steps`);
        returns the loss before each step (stops at a NaN/Inf)."""
        key = id(entrant)
        self._load(self.saved.get(key, self.initial))
        self.set_lr(entrant.lr)
        self.model.train()
        losses: list = []
        for i in range(entrant.steps, entrant.steps + steps):
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.batches[i % len(self.batches)])
            value = float(loss.detach())
            losses.append(value)
            self.tick()
            if not math.isfinite(value):
                break
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._store(key, self._capture())
        return losses

    def baseline(self) -> list:
        """The initial model's loss on each batch (train mode, no step, no gradient): what an
        LR of 0 scores at every step, the reference a step's progress is measured from (a
        batch's loss varies from batch to batch; the first batch's alone is a noisy start).
        Model, optimizer and RNGs are as before after it."""
        assert self.initial is not None, "baseline() after close()"
        state = rng_state()
        self._load(self.initial)
        self.model.train()
        try:
            with torch.no_grad():
                return [float(self.loss_fn(batch).detach()) for batch in self.batches]
        finally:
            self._load(self.initial)  # the forward passes moved BatchNorm's running statistics
            set_rng_state(state)

    def close(self) -> None:
        self.saved.clear()
        if self.initial is not None:
            self._load(self.initial)
        self.initial = None
        for name, p in self.model.named_parameters():
            saved = self.grads.get(name)
            p.grad = None if saved is None else saved.clone()
        for name, m in self.model.named_modules():
            if name in self.training:
                m.training = self.training[name]
        set_rng_state(self.rng)

    def __enter__(self) -> RaceTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
