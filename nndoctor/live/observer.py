"""The Watcher: a live run's probe, judges and report (SPEC §8).

The measuring (torch's global hooks, the loss through `backward()`, the GradScaler,
the sampled steps, the non-finite re-run) is `nndoctor.probes.live.LiveProbe`'s;
judging is `judge.py`'s. The Watcher starts and stops the probe, runs the judges
after the steps it records, raises `TrainingBug` for `fail_on` and `StopWatching`
for `--max-steps` / `--max-seconds`, and makes the report.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import torch.nn as nn

from ..checks.grads import SPARSE_GRADIENT_LAYERS
from ..probes import live as live_probe
from ..probes.activations import MIN_OBSERVATIONS
from ..probes.live import LiveProbe
from ..report.codes import SEVERITY_ORDER
from ..report.findings import CheckResult, Report, status_from_findings
from ..report.numbers import sig
from .errors import StopWatching, TrainingBug
from .judge import LOSS_TREND_MIN_STEPS, History, Judge

DEFAULT_EVERY = 50
# Steps between two runs of the judges when no finding must stop the loop at once: their
# Python (a few comparisons per code) costs ~5% of a tiny MLP's step when run every step, and
# a run over a range costs ~25 us cold whatever its length (bench/WATCH.md), so ranges are
# long; each finding still carries its own step, and the report judges what is left.
JUDGE_EVERY = 50

_active: Optional[Watcher] = None


class Watcher:
    """Observe training steps until `stop()`; `report` says what was found."""

    def __init__(self, model: Optional[nn.Module] = None, optimizer: Any = None, *,
                 every: int = DEFAULT_EVERY, fail_on: Optional[str] = None,
                 max_steps: Optional[int] = None, max_seconds: Optional[float] = None,
                 target: Optional[str] = None):
        if int(every) < 1:
            raise ValueError(f"every must be at least 1, not {every}")
        if fail_on is not None and fail_on not in SEVERITY_ORDER:
            raise ValueError(f"fail_on must be error, warning or info, not {fail_on!r}")
        self.every, self.fail_on = int(every), fail_on
        self.max_steps, self.max_seconds, self.target = max_steps, max_seconds, target
        self.history = History(every=self.every)
        self.judge = Judge(self.history)
        # Rectifier units are judged dead on as many observations as `check`'s scan needs
        # (probes/activations.MIN_OBSERVATIONS); embeddings are no "early layer" for vanishing
        # gradients (checks/grads.SPARSE_GRADIENT_LAYERS).
        limited = max_steps is not None or max_seconds is not None
        self.probe = LiveProbe(self.history, model, optimizer, every=self.every, on_step=self._judge,
                               on_step_end=self._limits if limited else None, min_observations=MIN_OBSERVATIONS,
                               skip_layers=SPARSE_GRADIENT_LAYERS)
        self.started = 0.0
        self.seconds = 0.0
        self.interrupted = False
        self.notes: list = []
        self._next_judged = 0  # the first step the judges have not seen

    @property
    def optimizer(self) -> Any:
        return self.probe.optimizer

    @property
    def roots(self) -> list:
        return self.probe.roots

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Watcher:
        global _active
        if _active is not None:
            raise RuntimeError("nndoctor is already watching a run (one watcher at a time)")
        _active = self
        self.started = time.perf_counter()
        try:
            self.probe.install()
        except BaseException:
            _active = None
            raise
        return self

    def stop(self) -> None:
        global _active
        self.probe.remove()
        if _active is self:
            _active = None
            self.seconds = time.perf_counter() - self.started
            if self._next_judged < self.history.steps:
                self.judge.on_steps(self._next_judged, self.history.steps - 1)
                self._next_judged = self.history.steps
            self.judge.finish()

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self.stop()
        return exc_type is not None and issubclass(exc_type, StopWatching)

    # ------------------------------------------------------------------ the user's side

    def log(self, loss: Any = None, val_loss: Any = None) -> None:
        """Tell the watcher a step's loss (overrides the one seen through backward) or a
        validation loss (feeds `overfitting`)."""
        if loss is not None:
            self.probe.log_loss(loss)
        if val_loss is not None:
            value = float(val_loss)
            self.history.val_losses.append((max(0, self.history.steps - 1), value))

    @property
    def report(self) -> Report:
        findings = sorted(self.judge.findings, key=lambda f: f.evidence.get("step", 0))
        h = self.history
        check = CheckResult(name="watch", status=status_from_findings(findings),
                            seconds=self.seconds or (time.perf_counter() - self.started),
                            findings=findings,
                            metrics={"steps": h.steps, "skipped_steps": sum(h.skipped),
                                     "every": self.every})
        report = Report(target=self.target, seconds=check.seconds, checks=[check],
                        notes=list(self.notes) + list(self.probe.notes) + self._loss_notes()
                        + self._unjudged_note(),
                        interrupted=self.interrupted)
        report.sections["watch"] = {"steps": h.steps, "skipped_steps": sum(h.skipped), "every": self.every,
                                    "losses": [sig(v, 6) for v in h.losses]}
        return report

    def _loss_notes(self) -> list:
        unseen, steps = self.probe.unseen_losses, self.history.steps
        notes = []
        if self.judge.adversarial:
            notes.append(f"loss-not-decreasing: not judged: another optimizer steps on a loss of its own "
                         f"(a GAN, actor-critic) on {self.history.other_objective_steps} of {steps} steps; "
                         f"the loss watched is the first optimizer's")
        if self.history.resumed and steps >= LOSS_TREND_MIN_STEPS:
            notes.append("loss-not-decreasing: not judged: the run resumed (the optimizer had trained "
                         "state at the first step watched), so its loss starts where it had got to")
        if not unseen:
            return notes
        return notes + [f"the loss was not seen on {unseen} of {steps} steps (no backward() on a scalar before "
                f"the step: torch.autograd.grad?): the loss judges read nothing there; pass it with "
                f"doc.log(loss=...) in nndoctor.watch()"]

    def _unjudged_note(self) -> list:
        """What dead-neurons could not judge: rectifiers whose units the activation scans saw
        fewer than MIN_OBSERVATIONS times (each scan reads one batch; how often it runs is
        paced, see probes/live.SCAN_BUDGET), so that a short run says so rather than nothing."""
        h, probe = self.history, self.probe
        if h.steps > self.every and not probe.roots:
            # no module holding the optimizer's parameters ran its forward outside a compiled graph
            return ["the model was not seen: no module holding the optimizer's parameters ran its "
                    "forward outside a compiled graph on the sampled steps (compiled in place, "
                    "module.compile(), before the watch began?), so the per-layer judges (dead units, "
                    "vanishing gradients, eval mode) read nothing; hand it over: nndoctor.watch(model=...)"]
        if h.steps == 0 or not probe.scan_units or any(f.code == "dead-neurons" for f in self.judge.findings):
            return []
        if probe.scans == 0:
            return [f"dead-neurons: not enough observations for a verdict: no activation scan ran in "
                    f"{h.steps} steps (a longer run, or a smaller --every, gives it some)"]
        sites = probe.unjudged_sites()
        if not sites:
            return []
        names = ", ".join(f"`{where}`" for where, _ in sites[:3]) + (f" and {len(sites) - 3} more"
                                                                     if len(sites) > 3 else "")
        # no count in the text: how many scans ran depends on the machine's speed (the pacing)
        return [f"dead-neurons: not enough observations for a verdict on {names}: fewer than "
                f"{MIN_OBSERVATIONS} per unit from the activation scans, which run as often as "
                f"{live_probe.SCAN_BUDGET:.0%} of the run's time allows (a longer run, or a smaller --every, gives more)"]

    # ------------------------------------------------------------------ after each step

    def _judge(self, step: int) -> None:
        # Without fail_on nothing needs a finding at once: the judges run every JUDGE_EVERY
        # steps over the steps since (each finding still carries its own step).
        first = self._next_judged
        if self.fail_on is None and step - first + 1 < JUDGE_EVERY and self.history.nonfinite is None:
            return
        self._next_judged = step + 1
        new = self.judge.on_steps(first, step) if step > first else self.judge.on_step(step)
        if self.fail_on is None:
            return
        bar = SEVERITY_ORDER[self.fail_on]
        for finding in new:
            if SEVERITY_ORDER[finding.severity] >= bar:
                raise TrainingBug(finding)

    def _limits(self) -> None:
        steps = self.history.steps
        if self.max_steps is not None and steps >= self.max_steps:
            raise StopWatching(f"--max-steps {self.max_steps} reached")
        if self.max_seconds is not None and time.perf_counter() - self.started > self.max_seconds:
            raise StopWatching(f"--max-seconds {self.max_seconds:g} reached")


