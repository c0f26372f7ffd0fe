"""Load a target (`PATH.py:ATTR` or `package.module:ATTR`) into a Setup (SPEC §1)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .errors import TargetError, short_path, summarize

DEFAULT_ATTR = "build"


@dataclass
class Setup:
    """What the user hands over. Only `model` is required (SPEC §1)."""

    model: Any
    train_loader: Any = None
    criterion: Any = None
    optimizer: Any = None
    val_loader: Any = None
    example_input: Any = None
    loss_fn: Optional[Callable] = None


SETUP_KEYS = tuple(f.name for f in dataclasses.fields(Setup))
_TUPLE_ORDER = ("model", "train_loader", "criterion", "optimizer", "val_loader")


def split_target(spec: str) -> tuple:
    """`a/b.py:build` -> ("a/b.py", "build"); a Windows drive letter is not a separator."""
    spec = spec.strip()
    path, sep, attr = spec.rpartition(":")
    if not sep or (len(path) == 1 and path.isalpha()) or "/" in attr or "\\" in attr:
        return spec, DEFAULT_ATTR
    return path, attr or DEFAULT_ATTR


def import_module_of(spec: str):
    """Import the module of a target and return (module, attr name, label for messages)."""
    where, attr = split_target(spec)
    if where.endswith(".py") or os.sep in where or "/" in where:
        return _import_file(where), attr, where
    # As `python -m` does, a module target is importable from the working folder
    # (the console script alone does not put it on sys.path); appended, so it
    # never shadows an installed package.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
        importlib.invalidate_caches()
    try:
        module = importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name and where.startswith(exc.name):
            raise TargetError(f"no module named {where!r} (a file target needs the .py suffix)") from exc
        raise TargetError(f"importing {where} failed: {summarize(exc)}") from exc
    except Exception as exc:  # the user's module raised while importing
        raise TargetError(f"importing {where} failed: {summarize(exc)}") from exc
    return module, attr, where


def _import_file(path: str):
    if not os.path.exists(path):
        raise TargetError(f"file not found: {path}")
    if not os.path.isfile(path):
        raise TargetError(f"not a file: {path}")
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    name = os.path.splitext(os.path.basename(path))[0]
    # The file is imported under its own name with its folder on sys.path, so its
    # sibling imports work (SPEC §1). A same-named module already imported from
    # elsewhere is not reused.
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # no loader for the suffix: it was not a .py file
        raise TargetError(f"cannot import {path}: not a Python file (a file target needs the .py suffix)")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        _restore_module(name, previous)
        where = f"{short_path(exc.filename or path)}:{exc.lineno}"
        raise TargetError(f"syntax error in {where}: {exc.msg}") from exc
    except BaseException as exc:
        _restore_module(name, previous)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise TargetError(f"importing {short_path(path)} failed: {summarize(exc)}") from exc
    return module


def _restore_module(name, previous):
    if previous is None:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = previous


def resolve_attr(spec: str) -> Any:
    """The object a target names; a callable is called with no arguments."""
    module, attr, label = import_module_of(spec)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"{label} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if callable(obj) and not _is_module_instance(obj):
        try:
            obj = obj()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise TargetError(f"{label}:{attr}() raised {summarize(exc)}") from exc
    return obj


def _is_module_instance(obj) -> bool:
    import torch.nn as nn

    return isinstance(obj, nn.Module)


def load_target(spec: str, data: Optional[str] = None) -> Setup:
    """Load `spec` into a Setup; `data` names a dataloader factory (`--data`)."""
    setup = to_setup(resolve_attr(spec), label=spec)
    if data:
        apply_data_factory(setup, data)
    return setup


def apply_data_factory(setup: Setup, data: str) -> None:
    """`--data`: a loader, a (train, val) pair, or a dict with train_loader/val_loader."""
    loaders = resolve_attr(data)
    if loaders is None:
        raise TargetError(f"{data} returned None; expected a loader, a (train, val) pair "
                          "or a dict with train_loader/val_loader")
    if isinstance(loaders, dict):
        unknown = set(loaders) - {"train_loader", "val_loader"}
        if unknown:
            raise TargetError(f"{data} returned a dict with unknown key {sorted(unknown)[0]!r} "
                              "(expected train_loader, val_loader)")
        setup.train_loader = loaders.get("train_loader", setup.train_loader)
        setup.val_loader = loaders.get("val_loader", setup.val_loader)
    elif isinstance(loaders, (tuple, list)) and len(loaders) == 2 and not any(map(_is_batch, loaders)):
        setup.train_loader, setup.val_loader = loaders
    else:
        setup.train_loader = loaders
    _check_iterable(setup, data)


def _is_batch(obj) -> bool:
    """A batch (a tensor, a dict, or a tuple whose inputs are tensors), as opposed to a
    loader: tells a (train, val) pair from a list of two (inputs, targets) batches."""
    import torch

    if isinstance(obj, (torch.Tensor, dict)):
        return True
    if isinstance(obj, (tuple, list)) and obj:
        first = obj[0]
        if isinstance(first, (tuple, list)) and first:
            first = first[0]
        return isinstance(first, (torch.Tensor, dict))
    return False


def to_setup(obj: Any, label: str = "target") -> Setup:
    """Normalise any SPEC §1 return shape into a Setup, with clear errors."""
    import torch.nn as nn

    if isinstance(obj, Setup):
        setup = dataclasses.replace(obj)
    elif isinstance(obj, nn.Module):
        setup = Setup(model=obj)
    elif isinstance(obj, dict):
        unknown = [k for k in obj if k not in SETUP_KEYS]
        if unknown:
            raise TargetError(f"{label} returned a dict with unknown key {unknown[0]!r} "
                              f"(expected {', '.join(SETUP_KEYS)})")
        if "model" not in obj:
            raise TargetError(f"{label} returned a dict without the required key 'model'")
        setup = Setup(**obj)
    elif isinstance(obj, (tuple, list)):
        if not 1 <= len(obj) <= len(_TUPLE_ORDER):
            raise TargetError(f"{label} returned a {type(obj).__name__} of {len(obj)} items; expected "
                              "(model, train_loader[, criterion[, optimizer[, val_loader]]])")
        setup = Setup(**dict(zip(_TUPLE_ORDER, obj)))
    else:
        raise TargetError(f"{label} gave {_a(type(obj).__name__)}; expected an nn.Module, a dict, "
                          "a (model, train_loader, ...) tuple or an nndoctor.Setup")
    if not isinstance(setup.model, nn.Module):
        raise TargetError(f"{label}: 'model' is {_a(type(setup.model).__name__)}, not an nn.Module")
    if setup.optimizer is not None and not hasattr(setup.optimizer, "param_groups"):
        if callable(setup.optimizer):
            try:
                setup.optimizer = setup.optimizer(setup.model.parameters())
            except Exception as exc:
                raise TargetError(f"{label}: the optimizer factory raised {summarize(exc)}") from exc
        if not hasattr(setup.optimizer, "param_groups"):
            raise TargetError(f"{label}: 'optimizer' is {_a(type(setup.optimizer).__name__)}, "
                              "not a torch optimizer or a callable params -> optimizer")
    if setup.criterion is not None and not callable(setup.criterion):
        raise TargetError(f"{label}: 'criterion' is {_a(type(setup.criterion).__name__)}, not callable")
    if setup.loss_fn is not None and not callable(setup.loss_fn):
        raise TargetError(f"{label}: 'loss_fn' is {_a(type(setup.loss_fn).__name__)}, not callable")
    _check_iterable(setup, label)
    return setup


def _check_iterable(setup: Setup, label: str) -> None:
    for key in ("train_loader", "val_loader"):
        loader = getattr(setup, key)
        if loader is None or hasattr(loader, "__iter__"):
            continue
        if callable(loader):  # a zero-argument callable returning a loader (SPEC §1)
            try:
                loader = loader()
            except Exception as exc:
                raise TargetError(f"{label}: {key}() raised {summarize(exc)}") from exc
            setattr(setup, key, loader)
        if not hasattr(loader, "__iter__"):
            raise TargetError(f"{label}: {key} is {_a(type(loader).__name__)}, not an iterable of batches")


def _a(noun: str) -> str:
    """'int' -> 'an int', 'str' -> 'a str'."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
