"""Assertions for test suites (SPEC §6), in the spirit of `torch.testing.assert_close`.

    from nndoctor.testing import assert_healthy
    assert_healthy("models/net.py:build", checks=["data", "init", "overfit"])

Nothing here imports torch until a diagnosis runs.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any, Optional, Union

__all__ = ["UnhealthyModelError", "assert_healthy", "findings_table"]

# Wide enough that a finding's message and fix wrap into a few lines in pytest's
# failure output (which prefixes each line with "E   ").
TABLE_WIDTH = 120


class UnhealthyModelError(AssertionError):
    """nndoctor found a problem at or above `fail_on`; `.report` holds the whole Report."""

    def __init__(self, message: str, report):
        super().__init__(message)
        self.report = report


def assert_healthy(target_or_model: Any, train_loader: Any = None, criterion: Any = None,
                   optimizer: Any = None, val_loader: Any = None, *,
                   checks: Optional[Union[str, Iterable[str]]] = None, fail_on: str = "error",
                   budget: Optional[float] = None, seed: int = 0, device: str = "auto",
                   config: Optional[dict] = None, data: Optional[str] = None,
                   max_seconds: Optional[float] = None):
    """Diagnose and return the Report; raise `AssertionError` (an `UnhealthyModelError`)
    whose message is the findings table when a finding is at or above `fail_on`, or a
    check could not complete.

    `target_or_model` is a target string (`"model.py:build"`, as the CLI takes), an
    `nn.Module`, a `Setup`, the dict or tuple a target's `build()` returns, or a Report
    already made. `checks` is a list or `"a,b"`; `None` runs every check whose inputs
    are present. Other arguments are `nndoctor.diagnose`'s.

    `budget` is `--budget`'s seconds for the whole diagnosis (SPEC §10): a check that
    cannot give a verdict in time is skipped, which this does not count as a failure.
    """
    __tracebackhide__ = True  # pytest: the failure shows the table, not this frame
    if fail_on not in ("error", "warning", "never"):
        raise ValueError(f"fail_on must be error, warning or never, not {fail_on!r}")
    from .report.findings import Report

    if isinstance(target_or_model, Report):
        report = target_or_model
    else:
        report = _diagnose(target_or_model, train_loader, criterion, optimizer, val_loader,
                           checks=_check_names(checks), seed=seed, device=device, config=config,
                           data=data, max_seconds=max_seconds, budget=budget)
    if report.exit_code(fail_on):
        raise UnhealthyModelError(failure_message(report, fail_on), report)
    return report


def _diagnose(obj, train_loader, criterion, optimizer, val_loader, **options):
    from .api import diagnose

    if isinstance(obj, str):
        if any(v is not None for v in (train_loader, criterion, optimizer, val_loader)):
            raise TypeError("a target string names its own loaders; pass either a target or a model")
        return diagnose(target=obj, **options)
    return diagnose(obj, train_loader, criterion, optimizer, val_loader, **options)


def _check_names(checks) -> Optional[list]:
    if checks is None:
        return None
    if isinstance(checks, str):
        checks = checks.split(",")
    return [c.strip() for c in checks if c.strip()]


def failure_message(report, fail_on: str = "error") -> str:
    """The AssertionError's text: which gate failed, the findings table, the verdict."""
    from .render.rich import verdict

    target = report.target or "the model"
    lines = [f"nndoctor: {target} is not healthy (fail_on={fail_on!r})", "", findings_table(report),
             "", verdict(report).plain, "`nndoctor explain CODE` prints the troubleshooting entry of a code."]
    return "\n".join(lines)


def findings_table(report, width: int = TABLE_WIDTH) -> str:
    """Plain text: one row per finding (severity, code, where, message and fix), and one per
    check that did not complete."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("severity", no_wrap=True)
    table.add_column("code", no_wrap=True)
    table.add_column("where", overflow="fold", max_width=24)
    table.add_column("message and fix", overflow="fold", ratio=1)
    for check in report.checks:
        if check.status == "error":
            table.add_row("error", f"({check.name} crashed)", "–",
                          f"the check did not complete: {check.reason or ''}")
    for f in report.findings:
        table.add_row(f.severity, f.code, f.where or "–", f"{f.message}\nfix: {f.fix}")
    if not table.rows:
        return "no findings"
    out = io.StringIO()
    Console(file=out, width=width, no_color=True, color_system=None, force_terminal=False,
            highlight=False, emoji=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())
