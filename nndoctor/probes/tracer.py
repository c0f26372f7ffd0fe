"""The probes' shared plumbing: one tracer (module path stack and op interception),
`modes_kept`, and `origin_node` (the autograd node that made a tensor's values).

`Tracer` is a `TorchFunctionMode` that also keeps the stack of the model's running
modules, from a forward pre-hook and an `always_call` forward hook on every module of
the model (each module once, under its first name in `named_modules()`):

* a module called again inside itself or reused in one forward (torchvision's shared
  `self.relu`) is pushed once per call and popped by identity, so the stack stays right;
* a forward that raises still runs the post-hook (`always_call`), so the stack unwinds;
* modules outside the model (the criterion is an `nn.Module` too) are not on the stack:
  no running module means the op is the loss's.

Every torch function call under the mode goes to `before_call(func, args, kwargs)`,
then runs, then `on_call(func, args, kwargs, out, module_path)` with the path of the
innermost running module (None: none runs). A probe subclasses it and overrides
`on_enter` / `on_exit` / `before_call` / `on_call`; the hooks are installed with
`install()` and removed with `remove()` (call it in `finally`).

Why not `torch.utils.module_tracker.ModuleTracker`: it hooks every module globally
(`register_module_forward_pre_hook`), so the criterion module counts as a running
module; it keeps a *set* of class-qualified names (`Net.layer1`), so a module re-entered
in the same forward is noted once and leaves the set on its first exit (with a
warning); its post-hook is not `always_call`, so a forward that raises leaves stale
entries; and it offers no per-module enter/exit callbacks with the outputs, which the
probes need.

NB: not reentrant, like every TorchFunctionMode: one tracer at a time.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any, Optional

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

# Autograd nodes that only move or copy values: looked through to find the op that made a tensor.
SHAPE_ONLY_NODES = re.compile(r"^(View|UnsafeView|ReshapeAlias|T|Transpose|Permute|Squeeze|Unsqueeze|"
                              r"Clone|Alias|Expand|ToCopy|Contiguous|Select|Slice|Flatten)Backward\d*$")


def through_shape_ops(node):
    """`node`, or the first node above it that is not a view/reshape/copy of a single input."""
    while node is not None and SHAPE_ONLY_NODES.match(type(node).__name__):
        parents = [n for n, _ in node.next_functions if n is not None]
        if len(parents) != 1:
            break
        node = parents[0]
    return node


def origin_node(t: torch.Tensor):
    """The autograd node that made `t`'s values, looking through views/reshapes/copies."""
    return through_shape_ops(t.grad_fn)


@contextlib.contextmanager
def modes_kept(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's train/eval flag on exit, whatever the body does to them."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


class Tracer(TorchFunctionMode):
    """Module path stack (forward pre/post hooks) plus op interception; see the module docstring."""

    def __init__(self, model: Optional[nn.Module] = None):
        super().__init__()
        self.paths: dict = {}  # id(module) -> its path ("" the root); id: a module may define __eq__
        self.modules: list = []
        if model is not None:
            for name, module in model.named_modules():
                self.paths[id(module)] = name
                self.modules.append(module)
        self.stack: list = []  # the running modules, innermost last
        self.handles: list = []

    # the module stack ---------------------------------------------------------------
    def install(self) -> Tracer:
        """Hook every module of the model (idempotent only through `remove()` first)."""
        for module in self.modules:
            self.handles.append(module.register_forward_pre_hook(self._pre))
            self.handles.append(module.register_forward_hook(self._post, always_call=True))
        return self

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.stack.clear()

    def _pre(self, module: nn.Module, args: Any) -> None:
        self.on_enter(module, self.paths[id(module)], args)
        self.stack.append(module)

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.stack and self.stack[-1] is module:
            self.stack.pop()
        self.on_exit(module, self.paths[id(module)], args, output)

    @property
    def current(self) -> Optional[nn.Module]:
        """The innermost running module, None when none runs."""
        return self.stack[-1] if self.stack else None

    @property
    def module_path(self) -> Optional[str]:
        """The innermost running module's path ("" the root), None when none runs."""
        return self.paths[id(self.stack[-1])] if self.stack else None

    def on_enter(self, module: nn.Module, path: str, args: Any) -> None:
        """A module's forward starts (called before it is pushed: `stack` holds its callers)."""

    def on_exit(self, module: nn.Module, path: str, args: Any, output: Any) -> None:
        """A module's forward ended, or raised (`output` is then None); it is popped already."""

    # op interception ----------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.before_call(func, args, kwargs)
        out = func(*args, **kwargs)
        self.on_call(func, args, kwargs, out, self.module_path)
        return out

    def before_call(self, func: Any, args: tuple, kwargs: dict) -> None:
        """Before `func` runs (its inputs as they are before an in-place op changes them)."""

    def on_call(self, func: Any, args: tuple, kwargs: dict, out: Any, module_path: Optional[str]) -> None:
        """After `func` ran and returned `out`, inside the module at `module_path`."""
