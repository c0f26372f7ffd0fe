"""Point a finding's `where` at the user's source: the file and line of the module's class.

Used by `--format github` to annotate the user's own file. A torch built-in
(nn.ReLU) is defined in torch, so we climb to the nearest enclosing module
whose class the user wrote.
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch.nn as nn

from .errors import is_user_file, short_path


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


def attach_sources(model: nn.Module, findings: list) -> None:
    for finding in findings:
        if finding.source is None:
            finding.source = source_of(model, finding.where)
