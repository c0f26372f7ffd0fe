"""--format github: GitHub Actions workflow commands (annotations on the user's file)."""

from __future__ import annotations

_COMMAND = {"error": "error", "warning": "warning", "info": "notice"}


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render(report) -> str:
    lines = []
    for check in report.checks:
        if check.status == "error":
            lines.append(f"::error title={_escape_property('nndoctor ' + check.name)}::"
                         f"{_escape_data('the check did not complete: ' + (check.reason or ''))}")
    for f in report.findings:
        props = []
        if f.source:
            props += [f"file={_escape_property(str(f.source[0]))}", f"line={int(f.source[1])}"]
        where = f" ({f.where})" if f.where else ""
        props.append(f"title={_escape_property(f'nndoctor {f.code}{where}')}")
        lines.append(f"::{_COMMAND[f.severity]} {','.join(props)}::"
                     f"{_escape_data(f'{f.message} Fix: {f.fix}')}")
    lines.append(f"nndoctor: {report.status} ({len(report.findings)} findings "
                 f"in {len(report.checks)} checks)")
    return "\n".join(lines)
