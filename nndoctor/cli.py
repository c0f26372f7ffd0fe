"""The command line: thin commands that parse, run, render and exit (SPEC §2, §5).

Nothing here imports torch at module level: `--help`, `codes` and `explain`
answer in a fraction of torch's import time.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import sys
from collections.abc import Sequence
from enum import Enum
from typing import Annotated, Any, Callable, Optional

import typer

from .checks import CHECKS, CheckInfo, Option
from .errors import UsageError, print_error

app = typer.Typer(
    name="nndoctor",
    help="A doctor for PyTorch training: finds what is wrong with a model and its data, "
         "where, with the numbers, and how to fix it.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class Format(str, Enum):
    rich = "rich"
    json = "json"
    junit = "junit"
    github = "github"
    sarif = "sarif"
    markdown = "markdown"


class FailOn(str, Enum):
    error = "error"
    warning = "warning"
    never = "never"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


# Options every check command shares (SPEC §2).
TargetArg = Annotated[Optional[str], typer.Argument(
    help="PATH.py:ATTR or package.module:ATTR (ATTR defaults to build); may come from the config.",
    show_default=False)]
DataOpt = Annotated[Optional[str], typer.Option("--data", help="A dataloader factory, PATH.py:ATTR.")]
ConfigOpt = Annotated[Optional[str], typer.Option("--config", help="YAML config (default: ./nndoctor.yaml).")]
FormatOpt = Annotated[Format, typer.Option("--format", help="Report format.")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", help="Write the report to this file.")]
FailOnOpt = Annotated[Optional[FailOn], typer.Option(
    "--fail-on", help="Exit 1 when a finding is at or above this severity [default: error].",
    show_default=False)]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed [default: 0].", show_default=False)]
DeviceOpt = Annotated[Optional[Device], typer.Option("--device", help="Where to run [default: auto].",
                                                     show_default=False)]
MaxSecondsOpt = Annotated[Optional[float], typer.Option(
    "--max-seconds", help="Time limit per check; a check over it reports status error.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show Python tracebacks.")]


class Common:
    """The shared options of one command invocation."""

    def __init__(self, target, data, config, format, output, fail_on, seed, device, max_seconds, debug):
        self.target, self.data, self.config = target, data, config
        self.format, self.output = Format(format).value, output
        self.fail_on = fail_on.value if fail_on else None
        self.seed, self.device = seed, device.value if device else None
        self.max_seconds, self.debug = max_seconds, debug


def execute(common: Common, names: list, overrides: Optional[dict] = None,
            only: Optional[str] = None, skip: Optional[str] = None,
            budget: Optional[float] = None, budgeted: bool = False) -> None:
    """Load the config and the target, run the checks, render, and exit with SPEC §5's code."""
    try:
        code = _execute(common, names, overrides or {}, only, skip, budget, budgeted)
    except UsageError as exc:
        print_error(str(exc), common.debug, exc)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def _execute(common: Common, names: list, overrides: dict, only, skip,
             budget: Optional[float] = None, budgeted: bool = False) -> int:
    from .config import load_config

    config = load_config(common.config)
    target = common.target or config.get("target")
    if not target:
        raise UsageError("no target: give TARGET (e.g. model.py:build) or set 'target' in nndoctor.yaml")
    fail_on = common.fail_on or config.get("fail_on", "error")
    if fail_on not in ("error", "warning", "never"):
        raise UsageError(f"fail_on must be error, warning or never, not {fail_on!r}")
    seed = common.seed if common.seed is not None else config.get("seed", 0)
    device = common.device or config.get("device", "auto")
    max_seconds = common.max_seconds if common.max_seconds is not None else config.get("max_seconds")
    # --budget (SPEC §10), `check` only: the option wins over `budget:` in the config
    if budget is None and budgeted:
        budget = config.get("budget")
    if budget is not None and not float(budget) > 0:
        raise UsageError(f"budget must be a number of seconds above 0, not {budget!r}")
    names = _choose(names, only if only is not None else config.get("only"),
                    skip if skip is not None else config.get("skip"))
    settings = {name: dict(section) for name, section in config["checks"].items()}
    for name, values in overrides.items():
        settings.setdefault(name, {}).update({k: v for k, v in values.items() if v is not None})
    machine_readable = common.format != "rich" or common.output
    # The user's code may print; on stdout that would corrupt the JSON/XML report.
    quiet = contextlib.redirect_stdout(sys.stderr) if machine_readable else contextlib.nullcontext()
    with quiet:
        report = _run(target, common.data or config.get("data"), names, settings, device, seed,
                      max_seconds, common.debug, budget=budget)
    _emit(report, common)
    if report.interrupted:
        from .report.numbers import plural

        print(f"nndoctor: interrupted: reported the {plural(len(report.checks), 'check')} that finished",
              file=sys.stderr)
        return 130
    return report.exit_code(fail_on)


def _choose(names: list, only, skip) -> list:
    def parse(value):
        if value is None:
            return None
        items = value if isinstance(value, list) else str(value).split(",")
        items = [str(i).strip() for i in items if str(i).strip()]
        for item in items:
            if item not in CHECKS:
                hint = difflib.get_close_matches(item, CHECKS, 1)
                raise UsageError(f"unknown check {item!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                 + f"; checks: {', '.join(CHECKS)}")
        return items

    only_list, skip_list = parse(only), parse(skip)
    chosen = [n for n in names if (only_list is None or n in only_list) and n not in (skip_list or [])]
    if not chosen:
        raise UsageError("--only/--skip left no check to run")
    return chosen


def _run(target, data, names, settings, device, seed, max_seconds, debug, budget=None):
    from .engine.runner import run_checks
    from .engine.session import resolve_device
    from .target import load_target

    try:
        resolve_device(device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    setup = load_target(target, data)
    with _progress() as progress:
        report = run_checks(setup, names, settings, target=target, device=device, seed=seed,
                            max_seconds=max_seconds, progress=progress, budget=budget)
    if debug:
        import traceback
        for check in report.checks:
            if check.exception is not None:
                traceback.print_exception(type(check.exception), check.exception,
                                          check.exception.__traceback__, file=sys.stderr)
    return report


@contextlib.contextmanager
def _progress():
    """Progress bars on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    @contextlib.contextmanager
    def bar(description, total):
        task = progress.add_task(description, total=total)
        try:
            yield lambda n=1: progress.advance(task, n)
        finally:
            progress.remove_task(task)

    with progress:
        yield bar


def _emit(report, common: Common) -> None:
    if common.format == "rich":
        from rich.console import Console

        from .render.rich import print_report

        if common.output:
            with open(common.output, "w", encoding="utf-8") as fh:
                print_report(report, Console(file=fh, width=100, no_color=True))
        else:
            print_report(report, Console())
        return
    from .render import render_text

    if common.format == "github":
        from .render.github import write_step_summary
        write_step_summary(report)  # where the annotations past GitHub's limit are read
    text = render_text(report, common.format)
    if common.output:
        with open(common.output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")


# ------------------------------------------------------------------ commands

# The shared options, in the order every check command shows them (SPEC §2).
_SHARED = (("data", DataOpt, None), ("config", ConfigOpt, None), ("format", FormatOpt, Format.rich),
           ("output", OutputOpt, None), ("fail_on", FailOnOpt, None), ("seed", SeedOpt, None),
           ("device", DeviceOpt, None), ("max_seconds", MaxSecondsOpt, None), ("debug", DebugOpt, False))


def _param(name: str, annotation, default) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def shared_options(own: Sequence[inspect.Parameter] = (), after: str = "target",
                   last: Sequence[inspect.Parameter] = ()) -> Callable:
    """Give a command TARGET and the shared options, plus its `own` options placed after
    `after` and `last` ones at the end; the command is called as `fn(common, **own_values)`."""
    def decorate(fn: Callable) -> Callable:
        params = [_param("target", TargetArg, None)] + [_param(*shared) for shared in _SHARED]
        at = [p.name for p in params].index(after) + 1
        params[at:at] = own
        params += last
        mine = [*own, *last]

        @functools.wraps(fn)
        def command(**values):
            common = Common(**{p.name: values.pop(p.name) for p in params if p not in mine})
            return fn(common, **values)

        del command.__wrapped__  # typer reads the signature below, not fn's
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return command
    return decorate


@app.command()
@shared_options([
    _param("only", Annotated[Optional[str], typer.Option(
        "--only", help=f"Run only these checks (a,b): {', '.join(CHECKS)}.")], None),
    _param("skip", Annotated[Optional[str], typer.Option("--skip", help="Skip these checks (a,b).")], None),
], after="config", last=[
    _param("budget", Annotated[Optional[float], typer.Option(  # SPEC §10
        "--budget", help="Seconds for the whole check: time real steps, plan each check's work to "
                         "fit; a check that cannot give a verdict in time is skipped, never an error.")], None),
])
def check(common: Common, only: Optional[str], skip: Optional[str], budget: Optional[float]):
    """Run every check whose inputs are present."""
    execute(common, list(CHECKS), only=only, skip=skip, budget=budget, budgeted=True)


def _budget(param: typer.CallbackParam, value: Optional[str]) -> Optional[float]:
    from .config import parse_budget

    try:
        return parse_budget(value, param.name)
    except ValueError:
        raise typer.BadParameter(f"a number such as 2e9 or 1.5G, not {value!r}") from None


def _option(option: Option) -> inspect.Parameter:
    """A check's own option (its registry row) as a Typer parameter; every default is None
    (not given: the config's value, else the check's DEFAULTS)."""
    kind: Any = option.type
    if isinstance(kind, tuple):  # a choice: an Enum, so --help lists the values
        kind = _choices(option.name, kind)
    info = typer.Option(option.flag, help=option.help, show_default=False,
                        callback=_budget if option.budget else None)
    return _param(option.name, Annotated[Optional[kind], info], None)


def _choices(name: str, values: tuple) -> Any:
    return Enum(name.title().replace("_", ""), {v: v for v in values}, type=str)


def _check_command(info: CheckInfo) -> None:
    """`nndoctor NAME`: the check alone, its registry row's options over its settings."""
    def run(common: Common, **values):
        own = {k: v.value if isinstance(v, Enum) else v for k, v in values.items()}
        execute(common, [info.name], {info.name: own} if own else None)

    run.__name__, run.__doc__ = info.name.replace("-", "_"), info.help
    app.command(name=info.name)(shared_options([_option(o) for o in info.options])(run))


# `nndoctor --help` lists the check commands in this order; a check not named here
# (a new one) comes after them.
COMMAND_ORDER = ("overfit", "grads", "dead", "nan", "init", "data", "fit", "lr-find", "size")
for _info in sorted((i for i in CHECKS.values() if i.help),
                    key=lambda i: COMMAND_ORDER.index(i.name) if i.name in COMMAND_ORDER else len(COMMAND_ORDER)):
    _check_command(_info)


# ------------------------------------------------------------------ watch (SPEC §8)

@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "allow_interspersed_args": False})
def watch(ctx: typer.Context,
          script: Annotated[Optional[str], typer.Argument(
              help="The training script; the arguments after it are the script's own.",
              show_default=False)] = None,
          module: Annotated[Optional[str], typer.Option(
              "-m", "--module", help="Run a module as the script, as python -m does.")] = None,
          every: Annotated[int, typer.Option(help="Detail (sampled) step period.")] = 50,
          max_steps: Annotated[Optional[int], typer.Option(
              help="End the script cleanly after this many optimizer steps.")] = None,
          config: ConfigOpt = None, format: FormatOpt = Format.rich, output: OutputOpt = None,
          fail_on: FailOnOpt = None, seed: SeedOpt = None, max_seconds: Annotated[Optional[float], typer.Option(
              "--max-seconds", help="End the script cleanly after this many seconds.")] = None,
          debug: DebugOpt = False):
    """Run your own training script unchanged and diagnose it live, step by step."""
    from .live.command import watch_command

    common = Common(None, None, config, format, output, fail_on, seed, None, max_seconds, debug)
    try:
        code = watch_command(script, module, list(ctx.args), every, max_steps, max_seconds, common)
    except UsageError as exc:
        print_error(str(exc), debug, exc)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@app.command()
def codes(markdown: Annotated[bool, typer.Option("--markdown", help="As a Markdown table (the README's).")]
          = False):
    """Every finding code, its severity and one-line meaning."""
    from .report.codes import CODES, markdown_table

    if markdown:
        print(markdown_table())
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .render.rich import SEVERITY_STYLE

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("code", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("meaning", overflow="fold")
    for c in CODES.values():
        table.add_row(c.code, f"[{SEVERITY_STYLE[c.severity]}]{c.severity}[/]", c.check, c.meaning)
    Console().print(table)


@app.command()
def explain(code: Annotated[str, typer.Argument(help="A finding code, e.g. dead-neurons.")]):
    """The troubleshooting entry for a finding code."""
    from rich.console import Console, Group
    from rich.padding import Padding
    from rich.text import Text

    from .render.rich import SEVERITY_STYLE
    from .report.codes import CODES

    entry = CODES.get(code.strip().lower())
    if entry is None:
        hint = difflib.get_close_matches(code, CODES, 1)
        print_error(f"unknown code {code!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + "; `nndoctor codes` lists them")
        raise typer.Exit(2)
    heading = Text(entry.code, style="bold")
    heading.append(f"  ({entry.severity}, check: {entry.check})\n", style=SEVERITY_STYLE[entry.severity])
    parts: list = [heading]
    for title, body in (("What it means", entry.meaning), ("Why it matters", entry.why), ("Fix", entry.fix)):
        # indented as a block, so that wrapped lines keep the indent
        parts += [Text(title, style="bold"), Padding(Text(body), (0, 0, 1, 2))]
    run_it = "watch train.py" if entry.check == "watch" else f"{entry.check} model.py:build"
    parts.append(Text(f"Run it: nndoctor {run_it}", style="dim"))
    Console().print(Group(*parts))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # outside a run (while importing torch, say)
        print("nndoctor: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
