"""The Python API (SPEC §6): `nndoctor.diagnose(...)`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

from .checks import CHECKS
from .errors import UsageError
from .report.findings import Report
from .target import Setup, load_target, to_setup


def diagnose(model: Any = None, train_loader: Any = None, criterion: Any = None, optimizer: Any = None,
             val_loader: Any = None, *, checks: Optional[Iterable[str]] = None, seed: int = 0,
             device: str = "auto", config: Optional[dict] = None, target: Optional[str] = None,
             data: Optional[str] = None, max_seconds: Optional[float] = None,
             budget: Optional[float] = None) -> Report:
    """Diagnose a model (or a target string, as the CLI does) and return the Report.

    The model and optimizer are left exactly as they were handed over: the same
    state_dicts, train/eval mode and requires_grad flags, and RNG states.
    `config` holds per-check settings, e.g. {"overfit": {"steps": 200}}. `budget` is
    `--budget`'s seconds for the whole run (SPEC §10).
    """
    from .config import validate
    from .engine.runner import run_checks
    from .engine.session import resolve_device

    try:
        resolve_device(device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    if target is not None:
        setup = load_target(target, data)
    elif model is None:
        raise UsageError("diagnose() needs a model or a target")
    elif isinstance(model, (Setup, dict, tuple, list)):  # a whole setup, as a target's build() gives
        if any(v is not None for v in (train_loader, criterion, optimizer, val_loader)):
            raise UsageError("diagnose() takes a whole setup (a Setup, dict or tuple) or a model "
                             "with its loaders, not both")
        setup = to_setup(model, label="diagnose()")
    else:
        setup = to_setup(Setup(model=model, train_loader=train_loader, criterion=criterion,
                               optimizer=optimizer, val_loader=val_loader), label="diagnose()")
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise UsageError(f"unknown check {unknown[0]!r}; checks: {', '.join(CHECKS)}")
    if budget is not None and not (isinstance(budget, (int, float)) and budget > 0):
        raise UsageError(f"budget must be a number of seconds above 0, not {budget!r}")
    settings = validate(config or {}, "config")["checks"]
    return run_checks(setup, names, settings, target=target, device=device, seed=seed,
                      max_seconds=max_seconds, budget=None if budget is None else float(budget))
