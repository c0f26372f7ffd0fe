"""--format json: the SPEC §4 report."""

from __future__ import annotations

import json


def render(report) -> str:
    return json.dumps(report.to_dict(), indent=2, allow_nan=False)
