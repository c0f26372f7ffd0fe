"""The engine the checks share: device, seeding, batches, loss wiring, state restore.

A `Session` wraps the user's Setup for one run of nndoctor. Checks read the
model, batches and loss through it, and never write hook plumbing or print.
Every check runs inside `Session.preserved()`, which snapshots the weights,
buffers, optimizer state, train/eval mode, `requires_grad` flags, gradients and
the global RNG states, and restores them bit-for-bit afterwards, so the checks'
order does not change their results (SPEC §1, §6).
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import DataError
from ..target import Setup

DEFAULT_LR = 1e-3  # SPEC §1: Adam(lr=1e-3) when no optimizer is given
LABEL_KEYS = ("labels", "label", "targets", "target", "y")  # dict batches: the target's key
# Above this much state (64M fp32 parameters) nndoctor keeps no second copy of it in memory:
# the snapshot it restores from is the one extra copy (issue 6). So the update/weight ratio
# is not measured (instrument.py) and the LR test caches its copy on disk (lr_find.py).
SECOND_COPY_MAX_MB = 256


def tensors_mb(tensors) -> float:
    """The memory the tensors hold, in MiB."""
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


class Skip(Exception):
    """Raised by a check that lacks what it needs; the message is the reason."""


class CheckTimeout(BaseException):
    """A check ran past its --max-seconds.

    A BaseException, as KeyboardInterrupt is: raised by SIGALRM anywhere in the user's
    forward, it must pass through `except Exception` (torchinfo re-raises what it
    catches as a RuntimeError; a check's own guard would swallow it and run on)."""


# --------------------------------------------------------------------------- seeding

def seed_everything(seed: int) -> None:
    random.seed(seed)
    # Not torch.manual_seed: for each accelerator backend that is not yet initialised it
    # queues a lazy seed with a formatted stack trace, ~0.14 ms a call, and nndoctor
    # reseeds per check and per batch (~20 calls, ~3 ms per `check`).
    # A device nndoctor runs on is initialised by then, so seeding the initialised ones is
    # the same.
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    if torch.backends.mps.is_available():
        torch.mps.manual_seed(seed)
    try:
        import numpy as np
    except ImportError:  # numpy is optional for torch
        return
    np.random.seed(seed % 2**32)


def rng_state() -> dict:
    state = {"random": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["random"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np
        np.random.set_state(state["numpy"])


def resolve_device(name: str = "auto") -> torch.device:
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r} (auto, cpu, cuda, mps)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda, but CUDA is not available on this machine")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps, but MPS is not available on this machine")
    return torch.device(name)


# --------------------------------------------------------------------------- state

@dataclass
class _Snapshot:
    tensors: Optional[dict]  # parameter/buffer name -> cloned data (None: weights left out)
    grads: dict
    requires_grad: dict
    training: dict
    optimizer: Optional[dict]
    rng: dict
    loader_rng: tuple = ()  # ((generator, state), ...) of the user's loaders' own generators


def to_device(obj: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to `device`."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return type(obj)((k, to_device(v, device)) for k, v in obj.items()) if type(obj) is dict \
            else {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    if hasattr(obj, "to") and hasattr(obj, "keys"):  # e.g. transformers' BatchEncoding
        return obj.to(device)
    return obj


@dataclass
class Batch:
    """One batch split the way the model is called (SPEC §1 batches)."""

    raw: Any
    args: tuple
    kwargs: dict
    target: Any  # None for dict batches that carry their own loss, or loss_fn batches

    @property
    def inputs(self) -> list:
        """The input tensors, for data checks."""
        tensors = [a for a in self.args if isinstance(a, torch.Tensor)]
        tensors += [v for k, v in self.kwargs.items() if isinstance(v, torch.Tensor)]
        return tensors

    @property
    def batch_size(self) -> Optional[int]:
        for t in self.inputs:
            if t.dim() > 0:
                return t.shape[0]
        return None


def split_batch(raw: Any) -> Batch:
    batch = _split(raw)
    if batch.batch_size == 0:  # a DataLoader never yields one; every statistic of it is undefined
        raise DataError("the loader yielded a batch of 0 samples")
    return batch


def _split(raw: Any) -> Batch:
    if raw is None:
        raise DataError("the loader yielded None instead of a batch")
    if isinstance(raw, dict) or (hasattr(raw, "keys") and hasattr(raw, "__getitem__")):
        kwargs = dict(raw)
        return Batch(raw, (), kwargs, None)
    if isinstance(raw, torch.Tensor):
        return Batch(raw, (raw,), {}, None)
    if isinstance(raw, (tuple, list)):
        if len(raw) == 0:
            raise DataError("the loader yielded an empty batch")
        inputs = raw[0]
        target = raw[1] if len(raw) > 1 else None
        if isinstance(inputs, dict):
            return Batch(raw, (), dict(inputs), target)
        args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        return Batch(raw, args, {}, target)
    raise DataError(f"a batch is a {type(raw).__name__}; expected (inputs, targets), a dict or a tensor")


def primary_output(output: Any) -> Any:
    """The tensor a criterion compares with the target: logits of a tuple/dict/ModelOutput."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
        return output.logits
    if isinstance(output, dict):
        for key in ("logits", "output", "out", "pred", "y"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return output


def criterion_kind(criterion: Any) -> Optional[str]:
    """cross_entropy / nll / bce / bce_logits for the classification losses we know, else None."""
    for cls, kind in ((nn.CrossEntropyLoss, "cross_entropy"), (nn.NLLLoss, "nll"),
                      (nn.BCEWithLogitsLoss, "bce_logits"), (nn.BCELoss, "bce")):
        if isinstance(criterion, cls):
            return kind
    functions = {F.cross_entropy: "cross_entropy", F.nll_loss: "nll", F.binary_cross_entropy: "bce",
                 F.binary_cross_entropy_with_logits: "bce_logits"}
    try:
        return functions.get(criterion)
    except TypeError:  # an unhashable callable
        return None


def output_loss(output: Any) -> Optional[torch.Tensor]:
    """The loss a model returned itself: `.loss` or `["loss"]` (Hugging Face)."""
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, dict):
        loss = output.get("loss")
    return loss if isinstance(loss, torch.Tensor) else None


# --------------------------------------------------------------------------- session

class Session:
    """One nndoctor run over a user's Setup. Checks read everything through it."""

    def __init__(self, setup: Setup, device: str = "auto", seed: int = 0,
                 progress: Optional[Callable] = None):
        self.setup = setup
        self.seed = seed
        self.device = resolve_device(device)
        self.notes: list = []  # one-line notes for the report (e.g. the criterion chosen)
        self.model: nn.Module = setup.model
        self._compiled_call = None  # a model compiled in place: its compiled call, put back in close()
        self._eager_model()
        self.deadline: Optional[float] = None
        # --budget: time.monotonic() past which the shared training run starts no step (it
        # ends with the steps it took; `deadline` is the hard stop that raises)
        self.run_deadline: Optional[float] = None
        self.run_min_steps = 0  # ... but not before this many steps (the least evidence the plan asks)
        self._progress_factory = progress
        self._batches: list = []
        self._sub_batches: dict = {}  # rows -> Batch (sub_batch)
        self._batch_iter: Optional[Iterator[Any]] = None
        self._loader_exhausted = False
        # What the loader raised (or a batch it yielded that cannot be split): raised again
        # for every later check, which would otherwise meet a closed loader ("empty").
        self._batch_error: Optional[BaseException] = None
        self._shared: dict = {}
        self._base: Optional[_Snapshot] = None  # the outermost preserved() scope's snapshot
        self._base_versions = None
        # Every check's settings as the user gave them ({check: {key: value}}), set by the
        # runner: work shared by several checks (one training run) reads its length here.
        self.settings: dict = {}
        self._criterion = setup.criterion
        self.criterion_name: Optional[str] = None
        self._original_device = _module_device(self.model)
        if self._original_device is not None and self._original_device != self.device:
            self.model.to(self.device)  # moved back in close()
        self.optimizer = setup.optimizer
        self.default_optimizer = self.optimizer is None
        if self.optimizer is None:
            params = list(self.model.parameters())
            # None for a model without parameters (Adam refuses an empty list): the
            # runner reports the training checks as errors, the others still run.
            self.optimizer = torch.optim.Adam(params, lr=DEFAULT_LR) if params else None
        elif self._original_device is not None and self._original_device != self.device:
            _optimizer_to(self.optimizer, self.device)

    def _eager_model(self) -> None:
        """A compiled model (torch.compile's wrapper, or module.compile() in place) is checked as
        its original module, eagerly: every check's hooks (forward, backward, tensor) would run
        inside the compiled graph and see nothing, and the tracer must see each op. The weights
        are the same ones, so every number is the model's."""
        model = self.model
        original = getattr(model, "_orig_mod", None) if type(model).__name__ == "OptimizedModule" else None
        if isinstance(original, nn.Module):
            self.model = original
        elif isinstance(model, nn.Module) and model.__dict__.get("_compiled_call_impl") is not None:
            self._compiled_call = model.__dict__["_compiled_call_impl"]
            model._compiled_call_impl = None
        else:
            return
        self.notes.append("the model is compiled (torch.compile): checked as its original module, run "
                          "eagerly (the checks' hooks do nothing inside a compiled graph); the weights, so "
                          "the numbers, are the same")

    def close(self) -> None:
        if self._compiled_call is not None:
            self.model._compiled_call_impl = self._compiled_call
            self._compiled_call = None
        if self._original_device is not None and self._original_device != self.device:
            self.model.to(self._original_device)
            _optimizer_to(self.optimizer, self._original_device)

    # ---------------------------------------------------------------- state
    def snapshot(self, weights: bool = True) -> _Snapshot:
        """Everything a check may change. `weights=False` leaves out the parameters,
        buffers and optimizer state (the heavy part), for scopes that restore those
        from the run's base snapshot."""
        model = self.model
        tensors = {name: t.detach().clone() for name, t in _named_state_tensors(model)} \
            if weights else None
        grads = {n: (p.grad.detach().clone() if p.grad is not None else None)
                 for n, p in model.named_parameters()}
        return _Snapshot(
            tensors=tensors,
            grads=grads,
            requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
            training={n: m.training for n, m in model.named_modules()},
            optimizer=copy.deepcopy(self.optimizer.state_dict())
            if weights and self.optimizer is not None else None,
            rng=rng_state(),
            loader_rng=tuple((g, g.get_state()) for g in _loader_generators(self.setup)),
        )

    def restore(self, snap: _Snapshot, weights_from: Optional[_Snapshot] = None) -> None:
        model = self.model
        heavy = weights_from or snap
        with torch.no_grad():
            for name, t in _named_state_tensors(model):
                saved = (heavy.tensors or {}).get(name)
                if saved is not None and saved.shape == t.shape:
                    t.copy_(saved)
        params = dict(model.named_parameters())
        for name, p in params.items():
            saved = snap.grads.get(name)
            p.grad = None if saved is None else saved.clone()
            if name in snap.requires_grad:
                p.requires_grad_(snap.requires_grad[name])
        for name, m in model.named_modules():
            if name in snap.training:
                m.training = snap.training[name]
        if heavy.optimizer is not None:
            self.optimizer.load_state_dict(copy.deepcopy(heavy.optimizer))
        set_rng_state(snap.rng)
        for generator, state in snap.loader_rng:
            generator.set_state(state)

    @contextlib.contextmanager
    def preserved(self):
        """Run a block and put the model, optimizer and RNGs back as they were.

        Scopes nest (the run, each check, shared work), but the weights are copied
        once: the outermost scope keeps the base snapshot, and an inner scope that
        starts while the weights are still the base ones (no parameter or buffer
        modified in place since, by their version counters) restores them from it.
        So a model is diagnosed holding one extra copy of its weights (issue 6).
        """
        if self._base is None:
            snap = self._base = self.snapshot()
            self._base_versions = _versions(self.model)
            try:
                yield
            finally:
                self.restore(snap)
                self._base = self._base_versions = None
            return
        if _versions(self.model) == self._base_versions:
            snap = self.snapshot(weights=False)
            try:
                yield
            finally:
                self.restore(snap, weights_from=self._base)
                self._base_versions = _versions(self.model)  # copy_ bumped them
            return
        snap = self.snapshot()  # a scope opened mid-training: its own full copy
        try:
            yield
        finally:
            self.restore(snap)
            if self._base is not None:
                self._base_versions = None  # weights differ from the base until its scope ends

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        """Work several checks read (e.g. one instrumented training run), done once.

        It is computed from the initial state with the run's seed, whichever
        check asks first, so its result does not depend on the checks' order.
        """
        if key not in self._shared:
            with self.preserved():
                seed_everything(self.seed)
                self._shared[key] = compute()
        return self._shared[key]

    def findings_of(self, check: str) -> list:
        """Check `check`'s findings for this run (its module's `findings_of(session)`), looked up
        through the registry: a check that words its message after another's findings reads
        them here instead of importing that check."""
        from .. import checks as registry  # lazy: the registry imports no torch, the checks do

        return list(registry.load(check).findings_of(self))

    # ---------------------------------------------------------------- data
    @property
    def has_data(self) -> bool:
        return self.setup.train_loader is not None

    def batches(self, n: int) -> list:
        """The first `n` training batches (fewer if the loader is shorter), split and on the device.

        Fetched once and cached, so every check sees the same batches.
        """
        if not self.has_data:
            raise Skip("no training data: return a train_loader from the target or pass --data")
        while len(self._batches) < n and not self._loader_exhausted:
            if self._batch_error is not None:
                raise self._batch_error
            if self._batch_iter is None:
                with self.preserved():  # a shuffling loader draws from the global RNG
                    seed_everything(self.seed)
                    self._batch_iter = iter(self.setup.train_loader)
            state = rng_state()
            seed_everything(self.seed + len(self._batches))
            try:
                raw = next(self._batch_iter)
            except StopIteration:
                self._loader_exhausted = True
                break
            except Exception as exc:
                self._batch_error = exc
                raise
            finally:
                set_rng_state(state)
            try:
                self._batches.append(split_batch(to_device(raw, self.device)))
            except DataError as exc:
                self._batch_error = exc
                raise
        if not self._batches:
            raise DataError("the training loader is empty: it yielded no batches")
        return self._batches[:n]

    @property
    def first_batch(self) -> Batch:
        return self.batches(1)[0]

    def sub_batch(self, rows: Optional[int]) -> Batch:
        """`rows` of the first batch's samples (the shared run's `overfit.rows`, set by
        --budget when the whole batch does not fit): picked by `budget.pick_rows`, at least 2
        per class, no RNG; every tensor whose first dimension is the batch's is indexed. The
        first batch itself when `rows` is None or not fewer than its samples. Cached."""
        batch = self.first_batch
        n = batch.batch_size
        if rows is None or n is None or rows >= n:
            return batch
        if rows not in self._sub_batches:
            from .budget import pick_rows

            keep = pick_rows(_class_labels(batch, n), n, int(rows))
            self._sub_batches[rows] = split_batch(_take(batch.raw, keep, n))
        return self._sub_batches[rows]

    def iterate(self, loader_name: str = "train_loader"):
        """Every batch of a loader (for whole-data checks such as fit), split and on the device."""
        loader = getattr(self.setup, loader_name)
        count = 0
        for raw in loader:
            count += 1
            yield split_batch(to_device(raw, self.device))
        if count == 0:
            raise DataError(f"the {loader_name.replace('_', ' ')} is empty: it yielded no batches")

    # ---------------------------------------------------------------- model & loss
    def forward(self, batch: Batch, model: Optional[nn.Module] = None) -> Any:
        model = model or self.model
        return model(*batch.args, **batch.kwargs)

    @property
    def criterion(self) -> Callable:
        if self._criterion is None:
            self._criterion = self._choose_criterion(self.first_batch)
        return self._criterion

    def _choose_criterion(self, batch: Batch) -> Callable:
        target = batch.target
        if not isinstance(target, torch.Tensor):
            raise DataError("no criterion given and the batch has no target tensor to choose one from; "
                            "give a criterion or a loss_fn")
        if target.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool):
            self.criterion_name = "CrossEntropyLoss"
            self.notes.append("criterion: CrossEntropyLoss (chosen: the targets are integer class labels)")
            return nn.CrossEntropyLoss()
        self.criterion_name = "MSELoss"
        self.notes.append("criterion: MSELoss (chosen: the targets are floats)")
        return nn.MSELoss()

    @property
    def uses_model_loss(self) -> bool:
        """True when the loss comes from loss_fn or from the model's own output."""
        return self.setup.loss_fn is not None or self.first_batch.target is None

    def loss(self, batch: Batch, output: Any = None, model: Optional[nn.Module] = None) -> torch.Tensor:
        """The scalar training loss of a batch (SPEC §1): loss_fn, the model's own .loss,
        or the criterion on (output, target). Pass `output` to reuse a forward pass."""
        model = model or self.model
        if self.setup.loss_fn is not None:
            loss = self.setup.loss_fn(model, batch.raw)
        else:
            if output is None:
                output = self.forward(batch, model)
            loss = output_loss(output)
            if loss is None:
                target = batch.target
                if target is None and batch.kwargs:
                    target = next((batch.kwargs[k] for k in LABEL_KEYS if k in batch.kwargs), None)
                if target is None:
                    raise DataError("cannot compute a loss: the batch has no target and the model "
                                    "returns no .loss; give a loss_fn(model, batch)")
                loss = self.criterion(primary_output(output), target)
        if not isinstance(loss, torch.Tensor):
            raise DataError(f"the loss is a {type(loss).__name__}, not a tensor; return a scalar tensor "
                            "that autograd can differentiate")
        if loss.numel() != 1:
            raise DataError(f"the loss is not a scalar (got shape {tuple(loss.shape)}); reduce it with .mean()")
        return loss.reshape(())

    def output_and_loss(self, batch: Batch, model: Optional[nn.Module] = None):
        model = model or self.model
        if self.setup.loss_fn is not None:
            return None, self.loss(batch, model=model)
        output = self.forward(batch, model)
        return output, self.loss(batch, output, model)

    def train_step(self, batch: Batch) -> torch.Tensor:
        """One optimizer step on a batch; returns the (detached) loss before the step."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(batch)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def num_outputs(self, batch: Optional[Batch] = None) -> Optional[int]:
        """Classes a classifier predicts: the last dim of its output (None if not a tensor)."""
        batch = batch or self.first_batch
        with torch.no_grad(), self.preserved():
            self.model.eval()
            out = primary_output(self.forward(batch))
        return out.shape[-1] if isinstance(out, torch.Tensor) and out.dim() >= 1 else None

    # ---------------------------------------------------------------- progress & time
    @contextlib.contextmanager
    def progress(self, description: str, total: Optional[int] = None):
        """A progress bar on stderr (when the CLI gave one); yields `advance(n=1)`."""
        if self._progress_factory is None:
            yield lambda n=1: self.tick()
            return
        with self._progress_factory(description, total) as advance:
            def step(n=1):
                advance(n)
                self.tick()
            yield step

    def tick(self) -> None:
        """Called from check loops: stops a check that ran past --max-seconds."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise CheckTimeout()


def _class_labels(batch: Batch, n: int) -> Optional[list]:
    """One class label per sample (a 1-D integer target, or a dict batch's `labels`), else None
    (regression, token or pixel targets)."""
    target = batch.target
    if target is None and batch.kwargs:
        target = next((batch.kwargs[k] for k in LABEL_KEYS if k in batch.kwargs), None)
    if not isinstance(target, torch.Tensor) or target.dim() != 1 or target.shape[0] != n:
        return None
    if target.is_floating_point() and not bool((target == target.round()).all()):
        return None
    return target.tolist()


def _take(obj: Any, keep: list, n: int) -> Any:
    """`obj` (a raw batch: tensors in tuples, lists, dicts) with every tensor whose first
    dimension is `n` indexed by `keep`; anything else as it is."""
    if isinstance(obj, torch.Tensor):
        if obj.dim() >= 1 and obj.shape[0] == n:
            return obj[torch.tensor(keep, dtype=torch.long, device=obj.device)]
        return obj
    if isinstance(obj, dict) or (hasattr(obj, "keys") and hasattr(obj, "__getitem__")):
        items = {k: _take(obj[k], keep, n) for k in obj.keys()}
        if type(obj) is dict:
            return items
        try:
            return type(obj)(items)  # e.g. transformers' BatchEncoding
        except Exception:
            return items
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_take(v, keep, n) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_take(v, keep, n) for v in obj)
    return obj


def _named_state_tensors(model: nn.Module):
    """Every parameter and buffer (persistent or not) with its name."""
    yield from model.named_parameters(remove_duplicate=True)
    yield from model.named_buffers(remove_duplicate=True)


def _loader_generators(setup: Setup) -> list:
    """The torch.Generators a shuffling DataLoader owns (`DataLoader(generator=g)`).

    They are not the global RNG: each epoch advances them, so without restoring them
    every check (and every run over the same loader) would see other batches."""
    found: list = []
    for key in ("train_loader", "val_loader"):
        loader = getattr(setup, key, None)
        batch_sampler = getattr(loader, "batch_sampler", None)
        for owner in (loader, getattr(loader, "sampler", None), batch_sampler,
                      getattr(batch_sampler, "sampler", None)):
            generator = getattr(owner, "generator", None)
            if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
                found.append(generator)
    return found


def _versions(model: nn.Module) -> tuple:
    """Identity and in-place modification counter of every parameter and buffer:
    equal tuples mean no optimizer step, copy_, BatchNorm update or reassignment."""
    return tuple((id(t), t._version) for _, t in _named_state_tensors(model))


def _module_device(model: nn.Module) -> Optional[torch.device]:
    for t in model.parameters():
        return t.device
    for b in model.buffers():
        return b.device
    return None


def _optimizer_to(optimizer, device) -> None:
    for state in optimizer.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                state[k] = v.to(device)
