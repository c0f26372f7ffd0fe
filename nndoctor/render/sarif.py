"""--format sarif: SARIF 2.1.0 for code scanning (GitHub's upload-sarif, GitLab, IDEs).

One rule per finding code (its meaning, why and fix from codes.py), one result
per finding at the user's file and line (nndoctor/report/locate.py). A check that did
not complete is a tool execution notification: it is not a finding of a rule.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

from .. import __version__
from ..report.codes import CODES

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
# SARIF §3.27.10: a result's level is none, note, warning or error.
LEVELS = {"error": "error", "warning": "warning", "info": "note"}


def render(report) -> str:
    from ..report.locate import target_source
    from .github import crash_site

    fallback = target_source(report.target)
    rule_index = {code: i for i, code in enumerate(CODES)}
    results = []
    for f in report.findings:
        where = f"`{f.where}`: " if f.where else ""
        result = {
            "ruleId": f.code,
            "ruleIndex": rule_index[f.code],
            "level": LEVELS[f.severity],
            "message": {"text": f"{where}{f.message} Fix: {f.fix}"},
            "locations": _locations(f.source, f.where),
            "properties": {"check": f.check, "where": f.where, "evidence": f.to_dict()["evidence"]},
        }
        if not result["locations"]:
            del result["locations"]
        results.append(result)
    notifications = []
    for check in report.checks:
        if check.status == "error":
            notification = {"level": "error", "descriptor": {"id": check.name},
                            "message": {"text": f"nndoctor {check.name} did not complete: "
                                                f"{check.reason or 'no reason given'}"}}
            locations = _locations(crash_site(check) or fallback, None)
            if locations:
                notification["locations"] = locations
            notifications.append(notification)
    run = {
        "tool": {"driver": {
            "name": "nndoctor",
            "version": __version__,
            "semanticVersion": __version__,
            "rules": [_rule(code) for code in CODES.values()],
        }},
        # Relative URIs are relative to where nndoctor ran (the checkout, in CI).
        "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().as_uri().rstrip("/") + "/"}},
        "invocations": [{
            # The checks ran; a check that raised on the user's model is reported, not fatal.
            "executionSuccessful": not report.interrupted,
            "toolExecutionNotifications": notifications,
        }],
        "results": results,
        "properties": {"target": report.target, "device": report.device, "seed": report.seed,
                       "status": report.status},
    }
    return json.dumps({"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}, indent=2,
                      ensure_ascii=False)


def _rule(code) -> dict:
    return {
        "id": code.code,
        "name": "".join(part.capitalize() for part in code.code.split("-")),
        "shortDescription": {"text": code.meaning},
        "fullDescription": {"text": code.why},
        "help": {"text": f"{code.meaning}\n\nWhy: {code.why}\n\nFix: {code.fix}\n\n"
                         f"More: nndoctor explain {code.code}",
                 "markdown": f"{code.meaning}\n\n**Why.** {code.why}\n\n**Fix.** {code.fix}\n\n"
                             f"More: `nndoctor explain {code.code}`"},
        "defaultConfiguration": {"level": LEVELS[code.severity]},
        "properties": {"tags": ["nndoctor", code.check]},
    }


def _locations(source, where) -> list:
    """The SARIF location of (file, line): a URI relative to the checkout where it can be."""
    if not source:
        return []
    filename, line = str(source[0]), max(1, int(source[1]))
    if os.path.isabs(filename):
        artifact = {"uri": Path(filename).as_uri()}
    else:
        artifact = {"uri": quote(filename.replace(os.sep, "/")), "uriBaseId": "%SRCROOT%"}
    location: dict = {"physicalLocation": {"artifactLocation": artifact, "region": {"startLine": line}}}
    if where:
        location["logicalLocations"] = [{"fullyQualifiedName": where, "kind": "module"}]
    return [location]
