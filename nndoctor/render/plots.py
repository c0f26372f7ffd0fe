"""Plots of the lr-find and fit curves: PNG files (matplotlib) and small text plots (Rich output).

The checks only name the file (their section's `plot`); `write_plots` draws it
from the section's numbers, after the check, in the runner.

The PNGs are drawn on matplotlib's Agg canvas directly (`Figure` +
`FigureCanvasAgg`): headless, and pyplot's global backend and figure list stay
untouched. matplotlib is imported only when a PNG is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

# --------------------------------------------------------------------------- PNG (matplotlib)

def write_plots(sections: dict) -> list:
    """Draw the PNG that a check's report section asks for with its `plot` path (the
    `--plot` option): the lr-find curve, the fit curves. Returns the paths written."""
    written = []
    lr = sections.get("lr_find") or {}
    if lr.get("plot"):
        nan = float("nan")  # the section holds a non-finite loss as None (JSON)
        written.append(lr_plot(lr["plot"], lr["lrs"], [nan if v is None else v for v in lr["losses"]],
                               {k: v for k, v in lr["suggestions"].items() if k != "race"},
                               lr["method"], lr["current_lr"], candidates=lr["candidates"],
                               winner=lr["winner"]))
    fit = sections.get("fit") or {}
    if fit.get("plot"):
        written.append(fit_plot(fit["plot"], fit["train_losses"], fit["val_losses"], fit["baseline_loss"],
                                fit.get("overfit_from_epoch")))
    return written


def _figure(size=(7.0, 4.5)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def lr_plot(path: str, lrs: Sequence[float], losses: Sequence[float], suggestions: dict,
            method: str, current_lr: Optional[float], candidates: Sequence[dict] = (),
            winner: Optional[float] = None) -> str:
    """Loss against LR (log axis), every suggestion marked, the race's candidates (on a second
    axis: their race loss) with the winner starred, the chosen LR and the current LR as lines."""
    points = [(lr, loss) for lr, loss in zip(lrs, losses) if math.isfinite(loss)]
    fig = _figure()
    ax = fig.add_subplot()
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], color="tab:blue", label="loss (smoothed)")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title("LR range test")
    markers = {"valley": "o", "steepest": "s", "min/10": "^"}
    for name, lr in suggestions.items():
        if lr is None:
            continue
        y = interpolate_log(lr, points)
        ax.scatter([lr], [y], marker=markers.get(name, "o"), s=60, zorder=3, label=f"{name}: {lr:.2e}")
    raced = [c for c in candidates if c.get("loss") is not None]
    if raced:
        race_ax = ax.twinx()
        race_ax.set_ylabel("race loss (lower is better)")
        race_ax.scatter([c["lr"] for c in raced], [c["loss"] for c in raced], marker="x",
                        color="tab:purple", zorder=4, label="race candidates")
        for c in candidates:
            if c.get("loss") is None:  # diverged in the race: on the top edge
                race_ax.annotate("diverged", (c["lr"], 1), xycoords=("data", "axes fraction"),
                                 ha="center", va="top", fontsize="x-small", color="tab:purple")
        if winner is not None:
            best = next((c for c in raced if c["lr"] == winner), None)
            if best is not None:
                race_ax.scatter([winner], [best["loss"]], marker="*", s=220, color="gold",
                                edgecolors="black", zorder=5, label=f"race winner {winner:.2e}")
        race_ax.legend(loc="lower left", fontsize="small")
    chosen = suggestions.get(method) if method in suggestions else winner
    if chosen is not None:
        ax.axvline(chosen, color="tab:green", lw=1.5, label=f"suggested ({method}) {chosen:.2e}")
    if current_lr:
        ax.axvline(current_lr, color="tab:red", ls="--", lw=1.5, label=f"current LR {current_lr:.2e}")
    if points:
        ax.set_ylim(*_y_limits([p[1] for p in points]))
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path)
    return path


def fit_plot(path: str, train_losses: Sequence[float], val_losses: Sequence[float],
             baseline: Optional[float], overfit_from: Optional[int]) -> str:
    """Training and validation loss per epoch, the trivial predictor's loss, the overfitting onset."""
    fig = _figure()
    ax = fig.add_subplot()
    epochs = list(range(1, len(train_losses) + 1))
    ax.plot(epochs, train_losses, marker="o", label="training loss")
    ax.plot(list(range(1, len(val_losses) + 1)), val_losses, marker="s", label="validation loss")
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls=":", label=f"trivial predictor {baseline:.3g}")
    if overfit_from is not None:
        ax.axvline(overfit_from, color="tab:red", ls="--", label=f"overfitting from epoch {overfit_from}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Training and validation loss")
    ax.set_xticks(epochs)
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path)
    return path


def interpolate_log(x: float, points: Sequence[tuple]) -> float:
    """y at x on a curve of (x, y) points, linear in log x."""
    if not points:
        return float("nan")
    lx = math.log10(x)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        l0, l1 = math.log10(x0), math.log10(x1)
        if l0 <= lx <= l1:
            return y0 if l1 == l0 else y0 + (y1 - y0) * (lx - l0) / (l1 - l0)
    return points[0][1] if lx < math.log10(points[0][0]) else points[-1][1]


def _y_limits(ys: Sequence[float]) -> tuple:
    """Bottom: the lowest loss; top: clipped so that a blow-up at the end does not flatten the rest."""
    low, high = min(ys), max(ys)
    first = ys[0]
    top = min(high, first + 1.5 * max(first - low, 0.0)) if first > low else high
    top = max(top, first)
    pad = 0.05 * (top - low or abs(low) or 1.0)
    return low - pad, top + pad


# --------------------------------------------------------------------------- text (Rich output)

# Braille dots: (column, row) of a 2x4 cell -> bit of U+2800.
_BRAILLE_BITS = {(0, 0): 0x01, (0, 1): 0x02, (0, 2): 0x04, (1, 0): 0x08, (1, 1): 0x10, (1, 2): 0x20,
                 (0, 3): 0x40, (1, 3): 0x80}
SPARK = "▁▂▃▄▅▆▇█"


def braille_plot(xs: Sequence[float], ys: Sequence[float], width: int = 56, height: int = 8,
                 log_x: bool = True, marks: Sequence[tuple] = ()) -> list:
    """A line plot in Braille dots, as text lines (at most width + 12 columns).

    `marks` are (x, symbol) pairs shown under the x axis (e.g. the suggested LR)."""
    points = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y) and (x > 0 or not log_x)]
    if len(points) < 2:
        return ["(no curve to plot)"]
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: float(v))
    x0, x1 = fx(points[0][0]), fx(points[-1][0])
    x0, x1 = min(x0, x1), max(x0, x1)
    low, top = _y_limits([p[1] for p in points])
    span_x, span_y = (x1 - x0) or 1.0, (top - low) or 1.0
    px_w, px_h = 2 * width, 4 * height
    cells = [[0] * width for _ in range(height)]

    def pixel(x, y):
        col = round((fx(x) - x0) / span_x * (px_w - 1))
        row = round((top - min(max(y, low), top)) / span_y * (px_h - 1))
        return min(max(col, 0), px_w - 1), min(max(row, 0), px_h - 1)

    pixels = [pixel(x, y) for x, y in points]
    for (c0, r0), (c1, r1) in zip(pixels, pixels[1:]):
        steps = max(abs(c1 - c0), abs(r1 - r0), 1)
        for k in range(steps + 1):
            c = round(c0 + (c1 - c0) * k / steps)
            r = round(r0 + (r1 - r0) * k / steps)
            cells[r // 4][c // 2] |= _BRAILLE_BITS[(c % 2, r % 4)]
    label_w = 9
    lines = []
    for i, row in enumerate(cells):
        if i == 0:
            label, tick = f"{top:.4g}", "┤"
        elif i == height - 1:
            label, tick = f"{low:.4g}", "┤"
        else:
            label, tick = "", "│"
        lines.append(f"{label:>{label_w}} {tick}" + "".join(chr(0x2800 + b) if b else " " for b in row))
    lines.append(" " * label_w + " └" + "─" * width)
    if marks:
        under = [" "] * width
        for x, symbol in marks:
            if x is None or (log_x and x <= 0):
                continue
            col = round((fx(x) - x0) / span_x * (px_w - 1)) // 2
            if 0 <= col < width:
                under[col] = symbol
            elif col >= width:
                under[-1] = "→"
            else:
                under[0] = "←"
        lines.append(" " * (label_w + 2) + "".join(under))
    first, last = points[0][0], points[-1][0]
    left, right = f"{first:.0e}" if log_x else f"{first:g}", f"{last:.0e}" if log_x else f"{last:g}"
    lines.append(" " * (label_w + 2) + left + " " * max(1, width - len(left) - len(right)) + right)
    return lines


def sparkline(values: Sequence[float], low: Optional[float] = None, high: Optional[float] = None) -> str:
    """▁▂▃▅▇ for a short series (one character per value), on a shared scale when given."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    low = min(finite) if low is None else low
    high = max(finite) if high is None else high
    span = (high - low) or 1.0
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append("×")
            continue
        level = round((min(max(v, low), high) - low) / span * (len(SPARK) - 1))
        out.append(SPARK[level])
    return "".join(out)
