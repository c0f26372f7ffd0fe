"""--format github: GitHub Actions workflow commands (annotations on the user's file)."""

from __future__ import annotations

_COMMAND = {"error": "error", "warning": "warning", "info": "notice"}


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render(report) -> str:
    from ..locate import target_source

    # Findings no class of the user's holds, and crashes outside the user's code,
    # point at the target's build function.
    fallback = target_source(report.target)
    lines = []
    for check in report.checks:
        if check.status == "error":
            props = _location(_crash_site(check) or fallback)
            props.append(f"title={_escape_property('nndoctor ' + check.name)}")
            lines.append(f"::error {','.join(props)}::"
                         f"{_escape_data('the check did not complete: ' + (check.reason or ''))}")
    for f in report.findings:
        props = _location(f.source or fallback)
        where = f" ({f.where})" if f.where else ""
        props.append(f"title={_escape_property(f'nndoctor {f.code}{where}')}")
        lines.append(f"::{_COMMAND[f.severity]} {','.join(props)}::"
                     f"{_escape_data(f'{f.message} Fix: {f.fix}')}")
    lines.append(f"nndoctor: {report.status} ({len(report.findings)} findings "
                 f"in {len(report.checks)} checks)")
    return "\n".join(lines)


def _location(source) -> list:
    """`file=…,line=…` of a (file, line) pair, so GitHub annotates the user's source."""
    if not source:
        return []
    return [f"file={_escape_property(str(source[0]))}", f"line={int(source[1])}"]


def _crash_site(check):
    """(file, line) in the user's code where a crashed check's exception was raised."""
    if check.exception is None:
        return None
    from ..errors import short_path, user_cause, user_frame

    frame = user_frame(user_cause(check.exception))
    return (short_path(frame.filename), frame.lineno) if frame is not None else None
