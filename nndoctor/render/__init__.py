"""Renderers: a Report to text. Kept apart from the checks; none imports torch."""

from __future__ import annotations


def render_text(report, fmt: str) -> str:
    """The report as text for the machine-readable formats."""
    if fmt == "json":
        from .json import render
    elif fmt == "junit":
        from .junit import render
    elif fmt == "github":
        from .github import render
    elif fmt == "sarif":
        from .sarif import render
    elif fmt == "markdown":
        from .markdown import render
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return render(report)
