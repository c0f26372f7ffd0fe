"""--format markdown: the report for a CI job summary (`$GITHUB_STEP_SUMMARY`).

GitHub-flavoured Markdown: the verdict line, the checks table and the findings
table (code, where, message, fix). Cell text is escaped so a `|` in a message
cannot split a cell and a `<` cannot open an HTML tag.
"""

from __future__ import annotations

from .rich import ICONS, verdict

_SEVERITY_ICON = {"error": "✗", "warning": "!", "info": "i"}


def cell(text) -> str:
    """Text safe inside one GFM table cell: one line, `|` escaped, no raw HTML."""
    text = str(text if text is not None else "")
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "<br>".join(line.strip() for line in text.splitlines()) or " "


def code_cell(text) -> str:
    """A code span in a table cell (a module path, a finding code); empty as `–`."""
    if not text:
        return "–"
    text = str(text).replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render(report) -> str:
    lines = [f"### nndoctor: {code_cell(report.target or 'model')}", "",
             f"**{cell(verdict(report).plain)}**", "",
             f"device `{report.device}` · seed `{report.seed}`", "",
             "| | check | status | time | result |",
             "|---|---|---|--:|---|"]
    for check in report.checks:
        if check.reason:
            detail = cell(check.reason)
        elif check.findings:
            detail = ", ".join(code_cell(c) for c in dict.fromkeys(f.code for f in check.findings))
        else:
            detail = "ok"
        lines.append(f"| {ICONS[check.status][0]} | {check.name} | {check.status} "
                     f"| {check.seconds:.1f}s | {detail} |")
    if report.findings:
        lines += ["", "| severity | code | where | message | fix |", "|---|---|---|---|---|"]
        for f in report.findings:
            lines.append(f"| {_SEVERITY_ICON[f.severity]} {f.severity} | {code_cell(f.code)} "
                         f"| {code_cell(f.where)} | {cell(f.message)} | {cell(f.fix)} |")
    if report.notes:
        lines.append("")
        lines += [f"- note: {cell(note)}" for note in report.notes]
    lines += ["", "`nndoctor explain CODE` prints the troubleshooting entry of a code."]
    return "\n".join(lines)
