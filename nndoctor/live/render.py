"""The rich report's "watch" section: what was watched, in one line."""

from __future__ import annotations

import math

from rich.text import Text

from ..render.rich import section


@section("watch")
def watch_section(data: dict) -> Text:
    losses = [v for v in data.get("losses", []) if isinstance(v, float) and math.isfinite(v)]
    text = Text(f"watched {data['steps']} optimizer steps", style="bold")
    if data.get("skipped_steps"):
        text.append(f" ({data['skipped_steps']} skipped by the GradScaler)")
    text.append(f", details every {data['every']}", style="dim")
    if losses:
        text.append(f"; loss {losses[0]:.4g} → {losses[-1]:.4g} (min {min(losses):.4g})")
    return text
