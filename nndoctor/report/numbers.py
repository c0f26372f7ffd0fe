"""Numbers as the report shows them: counts with units, plurals, rounded evidence.

One copy for the checks (messages, evidence) and the renderers. No torch.
"""

from __future__ import annotations

import math
from typing import Optional


def plural(count: int, noun: str) -> str:
    """`1 check`, `3 checks`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def human_count(n: Optional[float]) -> str:
    """1234567 -> 1.23M: units people read; None -> `–`."""
    if n is None:
        return "–"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def sig(x: float, digits: int = 4) -> float:
    """`x` to `digits` significant digits, as a float (evidence and metrics stay readable
    in the JSON); NaN and Inf as they are."""
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x
