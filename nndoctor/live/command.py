"""The `watch` command's body: run the script under a Watcher, render, exit (SPEC §5, §8)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Optional

from ..errors import UsageError

REPORT_ENV = "NNDOCTOR_REPORT"  # a path: the JSON report is also written there


def watch_command(script: Optional[str], module: Optional[str], args: list, every: int,
                  max_steps: Optional[int], max_seconds: Optional[float], common) -> int:
    """Returns the exit code: 0/1 by the findings (1 also when the script raised), 130 interrupted."""
    from ..config import load_config

    config = load_config(common.config)
    fail_on = common.fail_on or config.get("fail_on", "error")
    if fail_on not in ("error", "warning", "never"):
        raise UsageError(f"fail_on must be error, warning or never, not {fail_on!r}")
    seed = common.seed if common.seed is not None else config.get("seed")
    if every < 1:
        raise UsageError(f"--every must be at least 1, not {every}")
    if max_steps is not None and max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, not {max_steps}")
    if max_seconds is None:
        max_seconds = config.get("max_seconds")
    if module is not None and script is not None:
        args = [script] + list(args)
        script = None

    from . import script as runner
    from .observer import Watcher

    label = f"-m {module}" if module else script
    watcher = Watcher(every=every, max_steps=max_steps, max_seconds=max_seconds, target=label)
    machine_readable = common.format != "rich" or common.output
    quiet = contextlib.redirect_stdout(sys.stderr) if machine_readable else contextlib.nullcontext()
    with quiet:
        outcome = runner.run(script, module, args, watcher, seed)
    report = watcher.report
    if outcome.how == "stopped":
        report.notes.append(f"stopped: {outcome.detail}")
    elif outcome.how == "raised":
        report.notes.append(f"the script raised {outcome.detail}")
    elif outcome.how == "exited":
        report.notes.append(f"the script exited with status {outcome.detail}")
    if report.checks[0].metrics["steps"] == 0:
        report.notes.append("no optimizer step was taken: nothing to judge")
    emit(report, common.format, common.output)
    if outcome.how == "interrupted":
        print(f"nndoctor: interrupted: reported the {report.sections['watch']['steps']} steps watched",
              file=sys.stderr)
        return 130
    code = report.exit_code(fail_on)
    return 1 if outcome.how in ("raised", "exited") else code


def emit(report, fmt: str, output: Optional[str]) -> None:
    """Render the report (and write the JSON to $NNDOCTOR_REPORT when it is set)."""
    from . import render  # noqa: F401  (registers the "watch" section of the rich report)

    write_env_report(report)
    if fmt == "rich":
        from rich.console import Console

        from ..render.rich import print_report

        if output:
            with open(output, "w", encoding="utf-8") as fh:
                print_report(report, Console(file=fh, width=100, no_color=True))
        else:
            print_report(report, Console())
        return
    from ..render import render_text

    text = render_text(report, fmt)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")


def write_env_report(report) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    from ..render import render_text

    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_text(report, "json") + "\n")
