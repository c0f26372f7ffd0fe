"""The report model: findings, check results, the report and its exit code.

Plain data, no torch: renderers and the CLI read it; checks produce it.
"""

from __future__ import annotations

import contextlib
import io
import math
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Optional

from .. import __version__
from .codes import CODES, SEVERITY_ORDER


class _StrEnum(str, Enum):
    """A str that is also an enum member: it prints, formats, hashes and serialises (JSON,
    YAML, XML) as its value, so `Severity.error == "error"` and the report stays the same."""

    __str__ = str.__str__
    __format__ = str.__format__  # type: ignore[assignment]
    __hash__ = str.__hash__


class Severity(_StrEnum):
    info = "info"
    warning = "warning"
    error = "error"


class Status(_StrEnum):
    """A check's status (SPEC §4); a report's is pass, warning or error."""

    passed = "pass"
    warning = "warning"
    fail = "fail"
    error = "error"
    skipped = "skipped"


Locator = Callable[[Optional[str]], Optional[tuple]]
# How the findings being made find the user's source for their `where`: the runner sets
# it around each check (report.locate.source_of over the checked model), so a finding's
# `source` is set when it is made. None: findings are made without a source.
_LOCATOR: ContextVar[Optional[Locator]] = ContextVar("nndoctor_locator", default=None)


@contextlib.contextmanager
def locating(locate: Optional[Locator]):
    """Within the block, `make_finding` sets each finding's source with `locate(where)`."""
    token = _LOCATOR.set(locate)
    try:
        yield
    finally:
        _LOCATOR.reset(token)


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    check: str
    where: Optional[str]
    message: str
    evidence: dict = field(default_factory=dict)
    fix: str = ""
    # (file, line) of the user's code the finding points at, for --format github and sarif;
    # not part of the SPEC §4 JSON.
    source: Optional[tuple] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "severity", Severity(self.severity))

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity,
            "check": self.check,
            "where": self.where,
            "message": self.message,
            "evidence": _jsonable(self.evidence),
            "fix": self.fix,
        }


def make_finding(code: str, check: str, where: Optional[str], message: str,
                 evidence: Optional[dict] = None, severity: Optional[str] = None,
                 source: Optional[tuple] = None, fix: Optional[str] = None) -> Finding:
    """A finding whose severity and fix come from the code table (unless given), and whose
    source is the one given or, inside `locating`, the one found for `where`."""
    entry = CODES[code]
    locate = _LOCATOR.get()
    if source is None and locate is not None:
        source = locate(where)
    return Finding(code=code, severity=Severity(severity or entry.severity), check=check, where=where,
                   message=message, evidence=dict(evidence or {}), fix=entry.fix if fix is None else fix,
                   source=source)


@dataclass
class CheckResult:
    name: str
    status: Status = Status.passed
    seconds: float = 0.0
    reason: Optional[str] = None
    metrics: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)
    # Top-level report sections the check adds (SPEC §4: "size", "lr_find").
    sections: dict = field(default_factory=dict, repr=False)
    # The user's exception behind status "error", for --debug.
    exception: Optional[BaseException] = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "reason": self.reason,
            "metrics": _jsonable(self.metrics),
        }


def status_from_findings(findings: list) -> Status:
    worst = max((SEVERITY_ORDER[f.severity] for f in findings), default=0)
    return {2: Status.fail, 1: Status.warning}.get(worst, Status.passed)


@dataclass
class Report:
    target: Optional[str] = None
    device: str = "cpu"
    seed: int = 0
    seconds: float = 0.0
    checks: list = field(default_factory=list)
    # Top-level sections some checks add (SPEC §4: "lr_find", "size").
    sections: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)  # e.g. which criterion was chosen
    interrupted: bool = False

    @property
    def findings(self) -> list:
        return [f for c in self.checks for f in c.findings]

    @property
    def status(self) -> Status:
        if any(c.status == Status.error for c in self.checks):
            return Status.error
        worst = max((SEVERITY_ORDER[f.severity] for f in self.findings), default=0)
        return {2: Status.error, 1: Status.warning}.get(worst, Status.passed)

    def exit_code(self, fail_on: str = "error") -> int:
        """0: nothing at or above `fail_on`; 1: the gate failed (SPEC §5)."""
        if fail_on == "never":
            return 0
        if fail_on not in SEVERITY_ORDER:
            raise ValueError(f"fail_on must be error, warning or never, not {fail_on!r}")
        bar = SEVERITY_ORDER[fail_on]
        if any(c.status == "error" for c in self.checks):
            return 1  # a check that crashed on the user's model counts as an error
        return int(any(SEVERITY_ORDER[f.severity] >= bar for f in self.findings))

    def to_dict(self) -> dict:
        out = {
            "nndoctor": __version__,
            "target": self.target,
            "device": self.device,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "status": self.status,
            "checks": [c.to_dict() for c in self.checks],
            "findings": [f.to_dict() for f in self.findings],
            "notes": list(self.notes),  # e.g. the criterion nndoctor chose (SPEC §1)
        }
        out.update(_jsonable(self.sections))
        return out

    def __rich__(self):  # a Report displays itself in a rich console
        from ..render.rich import report_renderable
        return report_renderable(self)

    def _repr_html_(self) -> str:  # ... and in a Jupyter notebook
        from rich.console import Console

        console = Console(record=True, width=100, file=_NullFile())
        console.print(self)
        return console.export_html(inline_styles=True, code_format="<pre style=\"font-family:monospace\">{code}</pre>")

    def __str__(self) -> str:
        return f"nndoctor report: {self.status} ({len(self.findings)} findings in {len(self.checks)} checks)"


def _jsonable(value: Any) -> Any:
    """Plain JSON values: tensors and numpy scalars to floats, NaN/Inf to strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return _jsonable(value.item())
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)  # JSON has no NaN/Inf; "nan", "inf", "-inf" stay readable
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class _NullFile(io.StringIO):
    """Where a recording console writes when only its export is wanted."""

    def write(self, text: str) -> int:
        return len(text)
