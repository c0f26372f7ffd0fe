"""Run the chosen checks over one Session and collect the Report."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable
from typing import Callable, Optional

import torch

from .. import checks as registry
from ..errors import DataError, summarize, user_cause
from ..render.plots import write_plots
from ..report.findings import CheckResult, Report, Status, locating, status_from_findings
from ..report.locate import source_of, target_source
from ..target import Setup
from .session import CheckTimeout, Session, Skip, seed_everything
from .threads import limited_threads

# Set by a check that could not do some of its work because the model's forward pass
# raised: metrics["not_checked"][code] starts with it (the data check's label-out-of-range).
FORWARD_FAILED = "the forward pass raised"


def run_checks(setup: Setup, names: Iterable[str], settings: Optional[dict] = None, *,
               target: Optional[str] = None, device: str = "auto", seed: int = 0,
               max_seconds: Optional[float] = None, progress: Optional[Callable] = None,
               on_check: Optional[Callable] = None, budget: Optional[float] = None) -> Report:
    """Run `names` in registry order. Never raises for the user's model or data:
    a check that raises becomes status `error` with a one-line reason.
    KeyboardInterrupt stops the run; the report holds the checks that finished."""
    settings = settings or {}
    started = time.perf_counter()
    session = Session(setup, device=device, seed=seed, progress=progress)
    session.settings = settings
    report = Report(target=target, device=str(session.device), seed=seed)
    blocking = None
    failure = _Failure()
    # where findings point in the user's source: the user's class nearest their `where`,
    # else the target's `build` (for a model no class of the user's holds)
    fallback = target_source(target)

    def locate(where: Optional[str]) -> Optional[tuple]:
        return source_of(session.model, where) or fallback

    try:
        # the whole run leaves the user's objects (and torch's thread count) as they were
        with limited_threads(), session.preserved():
            chosen = [n for n in registry.CHECKS if n in set(names)]
            # --budget (SPEC §10): the plan's settings replace the user's for the checks it cuts
            planner = None
            if budget is not None:
                from .budget import BudgetRun
                planner = BudgetRun(session, budget, chosen, settings)
                settings = planner.settings
            for name in chosen:
                if on_check:
                    on_check(name)
                if planner is not None:
                    result = _run_budgeted(planner, session, name, max_seconds, locate)
                    report.sections.update(planner.sections())
                else:
                    result = run_one(session, name, settings.get(name) or {}, max_seconds, locate)
                # a finding after which the loss cannot be computed (the registry's `blocks`):
                # a later check that then raises is skipped, naming it
                blocks = registry.CHECKS[name].blocks
                blocking = blocking or next((f.code for f in result.findings if f.code in blocks), None)
                if result.status == Status.error and blocking and result.exception is not None:
                    result.status = Status.skipped
                    result.reason = f"cannot run until {blocking} is fixed ({result.reason})"
                elif result.status == Status.error and result.exception is not None:
                    failure.judge(session, result)
                report.checks.append(result)
                report.sections.update(result.sections)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        session.close()
    failure.name_in_partial_checks(report.checks)
    report.notes = list(dict.fromkeys(session.notes))
    report.seconds = time.perf_counter() - started
    return report


class _Failure:
    """One broken forward pass (or loss), one error: the first check whose exception is what
    the model's forward (or, if that runs, the loss) raises on the first batch keeps the
    error; every later check that raises the same is skipped, naming that check (SPEC §5:
    the run still exits 1 for the error)."""

    def __init__(self):
        self.what: Optional[str] = None  # "the forward pass" or "the loss"
        self.key: Optional[tuple] = None
        self.first: Optional[str] = None  # the check that shows the error
        self.probed = False

    def judge(self, session: Session, result: CheckResult) -> None:
        if not self.probed:
            self.probed = True
            self.what, self.key = _probe_forward(session)
        if self.key is None or _failure_key(result.exception) != self.key:
            return
        if self.first is None:
            self.first = result.name  # its reason stays the exception, as for any check error
        else:
            result.status = Status.skipped
            result.reason = f"{self.what} fails (see {self.first})"

    def name_in_partial_checks(self, checks: list) -> None:
        """A check that passed without the parts that need the forward pass says which."""
        if self.first is None:
            return
        for check in checks:
            missed = [code for code, why in (check.metrics.get("not_checked") or {}).items()
                      if isinstance(why, str) and why.startswith(FORWARD_FAILED)]
            if missed and check.status not in (Status.error, Status.skipped) and not check.reason:
                check.reason = f"could not check {', '.join(missed)}: {self.what} fails (see {self.first})"


def _run_budgeted(planner, session: Session, name: str, max_seconds: Optional[float],
                  locate: Optional[Callable] = None) -> CheckResult:
    """One check under the budget's plan: skipped when its minimum does not fit, stopped
    (skipped, inconclusive) at its time limit, judged by the asymmetric rules."""
    skip, limit = planner.before(name)
    if skip:
        result = CheckResult(name=name, status=Status.skipped, reason=skip)
        planner.after(result, timed_out=False)
        return result
    if max_seconds:
        limit = min(limit, max_seconds)
    result = run_one(session, name, planner.settings.get(name) or {}, limit, locate)
    timed_out = (result.status == Status.error and (result.reason or "").startswith("timed out after")
                 and (not max_seconds or limit < max_seconds))
    planner.after(result, timed_out=timed_out)
    return result


def _probe_forward(session: Session) -> tuple:
    """(what failed, its failure key) for the model's forward, then the loss, on the first
    batch; (None, None) when both run (the check's error is its own)."""
    try:
        batch = session.first_batch
    except Exception:  # the loader itself raised: every check reports that as it is
        return None, None
    for what, call in (("the forward pass", lambda: session.forward(batch) if session.setup.loss_fn is None
                        else session.loss(batch)),
                       ("the loss", lambda: session.loss(batch))):
        try:
            with session.preserved(), torch.no_grad():
                seed_everything(session.seed)
                call()
        except Exception as exc:
            return what, _failure_key(exc)
    return None, None


def _failure_key(exc: Optional[BaseException]) -> Optional[tuple]:
    """The exception's type and first line: the same failure whichever check's code called it."""
    if exc is None:
        return None
    exc = user_cause(exc)
    text = str(exc).strip()
    return type(exc).__name__, text.splitlines()[0] if text else ""


def run_one(session: Session, name: str, settings: dict, max_seconds: Optional[float],
            locate: Optional[Callable] = None) -> CheckResult:
    """One check; its findings' sources found with `locate(where)` (report.findings.locating)."""
    info = registry.CHECKS[name]
    result = CheckResult(name=name)
    started = time.perf_counter()
    try:
        reason = _missing_input(session, info.needs)
        if reason:
            raise Skip(reason)
        if info.trains and not any(p.requires_grad for p in session.model.parameters()):
            raise DataError("the model has no trainable parameters (no requires_grad=True): nothing to train")
        module = registry.load(name)
        merged = {**getattr(module, "DEFAULTS", {}), **settings}
        seed_everything(session.seed)
        with session.preserved(), _time_limit(session, max_seconds), locating(locate):
            outcome = module.run(session, merged)
            write_plots(outcome.sections)  # the PNGs the check's sections ask for (their "plot")
        result.findings = list(outcome.findings)
        result.metrics = dict(outcome.metrics)
        result.sections = dict(outcome.sections)
        result.status = status_from_findings(result.findings)
    except Skip as skip:
        result.status, result.reason = Status.skipped, str(skip)
    except CheckTimeout:
        result.status, result.reason = Status.error, f"timed out after {max_seconds:g} s"
    except DataError as exc:
        result.status, result.reason = Status.error, str(exc)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the user's model or data raised: report it, go on
        result.status, result.reason = Status.error, summarize(exc)
        result.exception = exc
    result.seconds = time.perf_counter() - started
    return result


def _missing_input(session: Session, needs: str) -> Optional[str]:
    if needs in ("data", "val") and not session.has_data:
        return "no training data: return a train_loader from the target or pass --data"
    if needs == "val" and session.setup.val_loader is None:
        return "no validation loader: return a val_loader from the target to check over/underfitting"
    return None


class _time_limit:
    """--max-seconds for one check: a SIGALRM where we can (main thread, Unix),
    plus the deadline that check loops read through `session.tick()`."""

    def __init__(self, session: Session, seconds: Optional[float]):
        self.session, self.seconds = session, seconds
        self.alarm = bool(seconds) and hasattr(signal, "setitimer") \
            and threading.current_thread() is threading.main_thread()

    def __enter__(self):
        if not self.seconds:
            return self
        self.session.deadline = time.monotonic() + self.seconds
        if self.alarm:
            self.previous = signal.signal(signal.SIGALRM, self._expire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    @staticmethod
    def _expire(signum, frame):
        raise CheckTimeout()

    def __exit__(self, *exc):
        if self.seconds:
            self.session.deadline = None
            if self.alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, self.previous)
        return False
