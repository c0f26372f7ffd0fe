"""--format junit: one testcase per check, error findings as failures (Jenkins/GitLab read it)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

# XML 1.0 forbids most control characters (an exception message may hold ANSI colour
# codes); ElementTree writes them as they are, and the file no longer parses.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text) -> str:
    return _NOT_XML.sub("", str(text))


def render(report) -> str:
    checks = report.checks
    suite = ET.Element("testsuite", {
        "name": "nndoctor",
        "tests": str(len(checks)),
        "failures": str(sum(c.status == "fail" for c in checks)),
        "errors": str(sum(c.status == "error" for c in checks)),
        "skipped": str(sum(c.status == "skipped" for c in checks)),
        "time": f"{report.seconds:.3f}",
    })
    props = ET.SubElement(suite, "properties")
    for key in ("target", "device", "seed"):
        ET.SubElement(props, "property", {"name": key, "value": _clean(getattr(report, key))})
    for check in checks:
        case = ET.SubElement(suite, "testcase", {
            "classname": _clean(f"nndoctor.{report.target or 'model'}"),
            "name": check.name,
            "time": f"{check.seconds:.3f}",
        })
        errors = [f for f in check.findings if f.severity == "error"]
        others = [f for f in check.findings if f.severity != "error"]
        if check.status == "skipped":
            ET.SubElement(case, "skipped", {"message": _clean(check.reason or "")})
        elif check.status == "error":
            ET.SubElement(case, "error", {"message": _clean(check.reason or "the check did not complete")})
        for f in errors:
            failure = ET.SubElement(case, "failure", {"message": _clean(f.message), "type": f.code})
            failure.text = _finding_text(f)
        if others:
            ET.SubElement(case, "system-out").text = "\n\n".join(
                f"[{f.severity}] {_finding_text(f)}" for f in others)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode")


def _finding_text(f) -> str:
    where = f" at {f.where}" if f.where else ""
    return _clean(f"{f.code}{where}: {f.message}\nfix: {f.fix}")
