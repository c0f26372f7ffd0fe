"""--format github: GitHub Actions workflow commands, and nothing else on stdout.

Each finding is an annotation on the user's file (`::error file=…,line=…::…`);
the verdict is one `::notice`. GitHub shows at most 10 annotations of each
level per step, so past that the rest are folded into one notice that says how
many and where they are: the job summary, which `write_step_summary` fills
with the Markdown report when GitHub sets `$GITHUB_STEP_SUMMARY`.
"""

from __future__ import annotations

import os

from ..report.numbers import plural

_COMMAND = {"error": "error", "warning": "warning", "info": "notice"}
# GitHub Actions docs ("Workflow commands", annotation limits): 10 error, 10 warning
# and 10 notice annotations per step; the rest are dropped without a word.
MAX_PER_LEVEL = 10
# The verdict and the fold note are notices too: they take two of the ten.
RESERVED_NOTICES = 2


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _command(level: str, message: str, source=None, title=None) -> str:
    props = _location(source)
    if title:
        props.append(f"title={_escape_property(title)}")
    head = f"::{level} {','.join(props)}" if props else f"::{level}"
    return f"{head}::{_escape_data(message)}"


def render(report) -> str:
    from ..report.locate import target_source
    from .rich import verdict

    # Crashes outside the user's code point at the target's build function (a finding
    # carries its own source, set when it was made).
    fallback = target_source(report.target)
    annotations = []  # (level, command)
    for check in report.checks:
        if check.status == "error":
            annotations.append(("error", _command(
                "error", f"the check did not complete: {check.reason or ''}",
                crash_site(check) or fallback, f"nndoctor {check.name}")))
    for f in report.findings:
        where = f" ({f.where})" if f.where else ""
        annotations.append((_COMMAND[f.severity], _command(
            _COMMAND[f.severity], f"{f.message} Fix: {f.fix}", f.source,
            f"nndoctor {f.code}{where}")))
    limits = {"error": MAX_PER_LEVEL, "warning": MAX_PER_LEVEL,
              "notice": MAX_PER_LEVEL - RESERVED_NOTICES}
    shown: list = []
    folded: dict = {}
    for level, command in annotations:
        if limits[level] > 0:
            limits[level] -= 1
            shown.append(command)
        else:
            folded[level] = folded.get(level, 0) + 1
    if folded:
        counts = ", ".join(plural(n, level) for level, n in folded.items())
        where = ("the job summary" if os.environ.get("GITHUB_STEP_SUMMARY")
                 else "the report of --format markdown or --format json")
        shown.append(_command("notice", f"{sum(folded.values())} more findings are not annotated "
                                        f"(GitHub shows {MAX_PER_LEVEL} per level): {counts}; "
                                        f"all of them are in {where}.", title="nndoctor"))
    shown.append(_command("notice", f"{verdict(report).plain} ({report.target or 'model'})",
                          title=f"nndoctor: {report.status}"))
    return "\n".join(shown)


def write_step_summary(report) -> bool:
    """Append the Markdown report to GitHub's job summary, when the job has one."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    from .markdown import render as markdown

    with open(path, "a", encoding="utf-8") as fh:
        fh.write(markdown(report) + "\n\n")
    return True


def _location(source) -> list:
    """`file=…,line=…` of a (file, line) pair, so GitHub annotates the user's source."""
    if not source:
        return []
    return [f"file={_escape_property(str(source[0]))}", f"line={int(source[1])}"]


def crash_site(check):
    """(file, line) in the user's code where a crashed check's exception was raised."""
    if check.exception is None:
        return None
    from ..errors import short_path, user_cause, user_frame

    frame = user_frame(user_cause(check.exception))
    return (short_path(frame.filename), frame.lineno) if frame is not None else None
