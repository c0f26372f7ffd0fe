"""The doctor's manner: a checks table (✓ ! ✗), findings with their fixes, a verdict.

Readable at 80 columns; plain (no colour) when stdout is not a terminal.
"""

from __future__ import annotations

from typing import Callable

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..report.numbers import human_count, plural

ICONS = {"pass": ("✓", "green"), "warning": ("!", "yellow"), "fail": ("✗", "red"),
         "error": ("✗", "red"), "skipped": ("–", "dim")}
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}

# Section renderers: a check's top-level report section (SPEC §4) -> a renderable.
SECTION_RENDERERS: dict = {}


def section(name: str) -> Callable:
    def register(fn):
        SECTION_RENDERERS[name] = fn
        return fn
    return register


def checks_table(report) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    table.add_column("", width=1, no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("result", overflow="fold", ratio=1)
    for check in report.checks:
        icon, style = ICONS[check.status]
        if check.reason:
            detail = check.reason
        elif check.findings:
            codes = list(dict.fromkeys(f.code for f in check.findings))
            detail = ", ".join(codes)
        else:
            detail = "ok"
        table.add_row(Text(icon, style=style), check.name, Text(check.status, style=style),
                      f"{check.seconds:.1f}s", detail)
    return table


def findings_table(findings) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, show_lines=False)
    table.add_column("finding", no_wrap=False, max_width=28, overflow="fold")
    table.add_column("message and fix", ratio=1, overflow="fold")
    for f in findings:
        head = Text(f.code, style=SEVERITY_STYLE[f.severity])
        head.append(f"\n{f.severity}", style="dim")
        if f.where:
            head.append(f"\nat {f.where}", style="bold")
        body = Text(f.message)
        body.append("\n→ ", style="green")
        body.append(f.fix, style="green")
        table.add_row(head, body)
        table.add_row("", "")
    return table


def verdict(report) -> Text:
    counts = {s: sum(f.severity == s for f in report.findings) for s in ("error", "warning", "info")}
    crashed = [c.name for c in report.checks if c.status == "error"]
    if report.status == "pass":
        text = Text("✓ No problems found", style="bold green")
    elif report.status == "warning":
        text = Text(f"! {plural(counts['warning'], 'warning')}", style="bold yellow")
    else:
        parts = []
        if counts["error"]:
            parts.append(plural(counts["error"], "error"))
        if counts["warning"]:
            parts.append(plural(counts["warning"], "warning"))
        if crashed:
            parts.append(f"{plural(len(crashed), 'check')} did not complete")
        text = Text("✗ " + ", ".join(parts), style="bold red")
    text.append(f" — {plural(len(report.checks), 'check')} in {report.seconds:.1f}s", style="dim")
    if report.interrupted:
        text.append(" (interrupted: only the finished checks are shown)", style="yellow")
    return text


def report_renderable(report) -> Group:
    parts: list = [Text.assemble(("nndoctor ", "bold"), (str(report.target or "model"), "bold cyan"),
                           (f"  device={report.device} seed={report.seed}", "dim")), Text("")]
    parts.append(checks_table(report))
    for name, data in report.sections.items():
        renderer = SECTION_RENDERERS.get(name)
        if renderer is not None and data:
            parts += [Text(""), renderer(data)]
    if report.findings:
        parts += [Text(""), findings_table(report.findings)]
    for note in report.notes:
        parts.append(Text(f"note: {note}", style="dim"))
    parts += [Text(""), verdict(report)]
    return Group(*parts)


def print_report(report, console: Console) -> None:
    console.print(report_renderable(report))


@section("size")
def size_section(size: dict):
    table = Table(title="size", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("parameters", f"{human_count(size.get('total_params'))} total, "
                                f"{human_count(size.get('trainable_params'))} trainable")
    table.add_row("parameter memory", f"{size.get('param_mb', 0):.2f} MB")
    mult_adds = size.get("mult_adds")
    table.add_row("mult-adds", f"{human_count(mult_adds)} (torchinfo, module hooks: "
                               f"{human_count(None if mult_adds is None else 2 * mult_adds)} FLOPs)")
    if size.get("flops") is not None:
        table.add_row("FLOPs", f"{human_count(size.get('flops'))} (FlopCounterMode, one eval forward pass)")
    table.add_row("input size", str(size.get("input_size")))
    layers = size.get("layers")
    if not layers:
        return table
    shown = 30  # the rest are in --format json
    total = size.get("flops") or 0
    per_layer = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    per_layer.add_column("module", overflow="fold", ratio=1)
    per_layer.add_column("type", overflow="ellipsis", max_width=20, no_wrap=True)
    per_layer.add_column("params", justify="right", no_wrap=True)
    per_layer.add_column("FLOPs", justify="right", no_wrap=True)
    per_layer.add_column("share", justify="right", no_wrap=True)
    for row in layers[:shown]:
        share = f"{100 * row['flops'] / total:.1f}%" if total else "–"
        per_layer.add_row(row["module"], row.get("type", ""), human_count(row["params"]),
                          human_count(row["flops"]), share)
    parts: list = [table, Text(""), per_layer]
    if len(layers) > shown:
        parts.append(Text(f"… {len(layers) - shown} more modules (see --format json)", style="dim"))
    return Group(*parts)


@section("lr_find")
def lr_find_section(data: dict):
    from .plots import braille_plot  # no matplotlib: text only

    title = Text("lr-find", style="bold")
    parts: list = [title]
    lrs, losses = data.get("lrs") or [], data.get("losses") or []
    suggestions = data.get("suggestions") or {}
    method, current = data.get("method"), data.get("current_lr")
    chosen = suggestions.get(method)
    candidates = data.get("candidates") or []
    # the race's candidates first, so the current LR and the suggestion are drawn over them
    marks = [(c["lr"], "×" if c.get("diverged") else "·") for c in candidates]
    marks += [(current, "●")] + ([(chosen, "▲")] if chosen else [])
    curve = [(x, y) for x, y in zip(lrs, losses) if y is not None]
    if len(curve) >= 2:
        lines = braille_plot([c[0] for c in curve], [c[1] for c in curve], width=56, height=8, marks=marks)
        parts.append(Text("\n".join(lines), style="cyan"))
        legend = Text(" " * 11)
        if chosen:
            legend.append("▲ suggested  ", style="green")
        legend.append("● current LR", style="dim")
        if candidates:
            legend.append("  · race candidate  × diverged", style="dim")
        parts.append(legend)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    if data.get("reason"):
        table.add_row("no suggestion", Text(data["reason"], style="yellow"))
    else:
        for name, lr in suggestions.items():
            if lr is None:
                continue
            mark = " ◀ suggested" if name == method else ""
            table.add_row(name, Text(f"{lr:.2e}{mark}", style="bold green" if mark else ""))
        if data.get("why"):
            table.add_row("why " + str(method), data["why"])
    if candidates:
        winner = data.get("winner")
        for c in candidates:
            loss = "diverged" if c.get("diverged") or c.get("loss") is None else f"{c['loss']:.4g}"
            mark = "  ◀ winner" if c["lr"] == winner else ""
            table.add_row(f"race {c['lr']:.2e}", Text(f"{loss} after {c['steps']} steps ({c['rule']}){mark}",
                                                      style="bold green" if mark else ""))
    if current is not None:
        ratio = current / chosen if chosen else None
        ratio = "" if ratio is None else f" ({ratio:.0f}x the suggestion)" if ratio >= 10 \
            else f" ({ratio:.2g}x the suggestion)"
        table.add_row("current LR", f"{current:.2e}{ratio}")
    if data.get("stopped"):
        table.add_row("stopped", f"early: the loss {data['stopped']} at LR {lrs[len(curve) - 1]:.2e}"
                      if curve else str(data["stopped"]))
    if data.get("plot"):
        table.add_row("plot", str(data["plot"]))
    parts.append(table)
    return Group(*parts)


@section("fit")
def fit_section(data: dict):
    from .plots import sparkline

    train, val = data.get("train_losses") or [], data.get("val_losses") or []
    baseline = data.get("baseline_loss")
    finite = [v for v in train + val if v is not None]
    low, high = (min(finite), max(finite)) if finite else (None, None)
    table = Table(title="fit", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("loss", style="bold", no_wrap=True)
    table.add_column("curve", no_wrap=True)
    for i in range(len(train)):
        table.add_column(f"ep {i + 1}", justify="right", no_wrap=True)
    table.add_row("train", Text(sparkline(train, low, high), style="cyan"), *[f"{v:.4g}" for v in train])
    table.add_row("val", Text(sparkline(val, low, high), style="magenta"), *[f"{v:.4g}" for v in val])
    notes = []
    if baseline is not None:
        notes.append(f"trivial predictor ({data.get('baseline_kind')}): {baseline:.4g}")
    if data.get("overfit_from_epoch"):
        notes.append(f"overfitting from epoch {data['overfit_from_epoch']}")
    if data.get("stopped"):
        notes.append(str(data["stopped"]))
    if data.get("plot"):
        notes.append(f"plot: {data['plot']}")
    parts = [table] + [Text(n, style="dim") for n in notes]
    return Group(*parts)


# --budget (SPEC §10): the plan's one line (engine/budget.py writes it)
@section("budget")
def budget_section(data: dict):
    return Text(str(data.get("line", "")), style="dim")
