"""Point a finding's `where` at the user's source: the file and line of the module's class.

The runner sets each finding's source with it when the finding is made
(report.findings.locating); `--format github` and `sarif` annotate the user's
file there. A torch built-in (nn.ReLU) is defined in torch, so we climb to the
nearest enclosing module whose class the user wrote. A model no class of the user's holds (an
nn.Sequential built inside `build()`) points at the target's `build` instead.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any, Optional

import torch.nn as nn

from ..errors import is_user_file, short_path


def module_path_of(model: nn.Module, where: str) -> str:
    """`features.3:relu#0` -> `features.3`; `features.3.weight` -> `features.3`."""
    path = where.split(":", 1)[0].strip()
    names = dict(model.named_modules())
    while path and path not in names:
        path = path.rpartition(".")[0]
    return path


def source_of(model: nn.Module, where: Optional[str]) -> Optional[tuple]:
    """(file, line) of the user-written class closest to `where`, or None."""
    path = module_path_of(model, where) if where else ""
    modules = dict(model.named_modules())
    while True:
        module = modules.get(path)
        if module is not None:
            found = _class_source(type(module))
            if found:
                return found
        if not path:
            return None
        path = path.rpartition(".")[0]


def _class_source(cls) -> Optional[tuple]:
    try:
        filename = inspect.getsourcefile(cls)
        if not filename or not is_user_file(filename):
            return None
        line = inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return None
    return short_path(filename), line


def target_source(spec: Optional[str]) -> Optional[tuple]:
    """(file, line) of the target's ATTR (`build`) in the user's already-imported module,
    or None: where the model is defined when no class of the user's defines it."""
    if not spec:
        return None
    from ..target import split_target

    where, attr = split_target(spec)
    if where.endswith(".py") or "/" in where or os.sep in where:
        module = sys.modules.get(os.path.splitext(os.path.basename(where))[0])
        if module is None or os.path.abspath(getattr(module, "__file__", None) or "") != os.path.abspath(where):
            return None  # not the module load_target imported
    else:
        module = sys.modules.get(where)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    try:
        obj = inspect.unwrap(obj)
        filename = inspect.getsourcefile(obj)
        line = inspect.getsourcelines(obj)[1]
    except (OSError, TypeError, ValueError):  # not a function or class: the module's file
        filename, line = getattr(module, "__file__", None), 1
    if not filename or not is_user_file(filename):
        return None
    return short_path(filename), line
