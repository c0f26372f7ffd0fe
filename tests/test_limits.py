"""Limits (issue 6): --max-seconds per check, and Ctrl-C (exit 130 with the finished checks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import ROOT
from torch.utils._python_dispatch import _get_current_dispatch_mode
from typer.testing import CliRunner

from nndoctor.cli import app
from nndoctor.engine.runner import run_checks
from nndoctor.target import load_target

LIMITS = os.path.join("tests", "fixtures", "limits")
SLOW = os.path.join(LIMITS, "nd_slow.py")
sys.path.insert(0, os.path.join(ROOT, LIMITS))
from nd_slow import SLEEP_SECONDS, TRAINING_MARKER  # noqa: E402
from state_probe import capture, differences  # noqa: E402

LIMIT = 0.5  # --max-seconds of the tests; the slow forward sleeps SLEEP_SECONDS (60 s)
# The run's own time over the limit: the alarm fires at LIMIT; restoring the state and a
# loaded 2-core CI box add a little. Far below SLEEP_SECONDS, so a limit that did not
# fire cannot pass.
SLACK = 10.0


def test_a_check_over_max_seconds_is_an_error_and_the_rest_go_on():
    setup = load_target(f"{SLOW}:slow_eval")
    before = capture(setup.model, setup.optimizer)
    started = time.perf_counter()
    report = run_checks(setup, ["size", "data", "overfit"], {"overfit": {"steps": 5}}, device="cpu",
                        max_seconds=LIMIT)
    elapsed = time.perf_counter() - started
    size, data, overfit = report.checks
    assert (size.status, size.reason) == ("error", "timed out after 0.5 s")
    assert LIMIT <= size.seconds < LIMIT + SLACK
    # The next checks ran, each within the limit (they do not run the slow eval-mode forward).
    assert data.status == "pass" and overfit.status in ("pass", "warning", "fail")
    assert overfit.metrics["steps_done"] == 5
    assert elapsed < 3 * LIMIT + SLACK < SLEEP_SECONDS
    assert report.status == "error" and report.exit_code("never") == 0 and report.exit_code() == 1
    # The check was stopped mid-forward (inside torchinfo's and FlopCounterMode's hooks):
    # everything is back as it was, no hook or dispatch mode is left behind.
    assert differences(before, capture(setup.model, setup.optimizer)) == []
    assert _get_current_dispatch_mode() is None
    assert setup.model.training
    out = setup.model.body(torch.zeros(2, 4))  # the model still works
    assert out.shape == (2, 3)


def test_max_seconds_from_the_cli():
    result = CliRunner().invoke(app, ["check", f"{SLOW}:slow_eval", "--only", "size,data", "--format", "json",
                                      "--max-seconds", "0.5"], catch_exceptions=False)
    assert result.exit_code == 1  # a check that ran over counts as an error for --fail-on
    report = json.loads(result.stdout)
    assert [(c["name"], c["status"], c["reason"]) for c in report["checks"]] == [
        ("size", "error", "timed out after 0.5 s"), ("data", "pass", None)]


def test_ctrl_c_in_process_keeps_the_finished_checks():
    setup = load_target(f"{SLOW}:ctrl_c_in_training")
    before = capture(setup.model, setup.optimizer)
    report = run_checks(setup, ["size", "overfit", "lr-find"], device="cpu")
    assert report.interrupted
    assert [(c.name, c.status) for c in report.checks] == [("size", "pass")]  # lr-find never started
    assert differences(before, capture(setup.model, setup.optimizer)) == []

    result = CliRunner().invoke(app, ["check", f"{SLOW}:ctrl_c_in_training", "--only", "size,overfit",
                                      "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 130
    assert [c["name"] for c in json.loads(result.stdout)["checks"]] == ["size"]


# Generous: on a loaded 2-core machine importing torch alone can take 10-20 s.
STARTUP_TIMEOUT = 180
EXIT_TIMEOUT = 60


@pytest.mark.slow
def test_sigint_prints_the_finished_checks_and_exits_130():
    """A real Ctrl-C (SIGINT) to `nndoctor check` while the second check runs."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nndoctor", "check", f"{SLOW}:slow_train", "--only", "size,overfit",
         "--format", "json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A suite started in the background (`pytest &` in a script) inherits SIGINT ignored,
        # and Python then leaves it ignored: give the child the default, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stderr_lines: list = []
    training = threading.Event()

    def read_stderr():
        for line in process.stderr:
            stderr_lines.append(line)
            if TRAINING_MARKER in line:
                training.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        # The marker is printed by the first train-mode forward: `size` (eval mode) is done.
        assert training.wait(STARTUP_TIMEOUT), "".join(stderr_lines)
        process.send_signal(signal.SIGINT)
        stdout = process.stdout.read()
        code = process.wait(EXIT_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    assert code == 130, "".join(stderr_lines)
    report = json.loads(stdout)  # stdout holds the JSON report alone
    assert [(c["name"], c["status"]) for c in report["checks"]] == [("size", "pass")]
    assert report["size"]["total_params"] == 4 * 8 + 8 + 8 * 3 + 3
    assert "Traceback" not in "".join(stderr_lines)
    assert stderr_lines[-1].strip() == "nndoctor: interrupted: reported the 1 check that finished"


# ------------------------------------------------------------------ CI: --format github

def _line_of(path: str, text: str) -> int:
    with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
        return next(i for i, line in enumerate(fh, 1) if text in line)


def _annotations(args: list, code: int) -> list:
    result = CliRunner().invoke(app, args + ["--format", "github"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    lines = result.stdout.splitlines()
    assert all(line.startswith("::") for line in lines) and lines[-1].startswith("::notice title=nndoctor%3A ")
    return lines[:-1]  # the findings' annotations, without the verdict


def test_github_annotation_points_at_the_users_class():
    path = "sample_models/dead_relu_mlp.py"
    (line,) = _annotations(["dead", path], 0)  # a warning does not fail the default gate ...
    assert line.startswith(f"::warning file={path},line={_line_of(path, 'class DeadReluMLP(')},"
                           "title=nndoctor dead-neurons (network.3)::")
    assert "units (8" in line and "Fix: " in line
    assert len(_annotations(["dead", path, "--fail-on", "warning"], 1)) == 1  # ... unless asked to


def test_github_annotation_falls_back_to_the_build_function():
    # nn.Sequential built inside build(): no class of the user's to point at.
    path = os.path.join(LIMITS, "nd_seq_dead.py")
    (line,) = _annotations(["dead", path], 0)
    assert line.startswith(f"::warning file={path},line={_line_of(path, '# LINE: build')},"
                           "title=nndoctor dead-neurons (3)::")
    # A check that crashed outside the user's code (an empty loader) points at the factory too.
    bad = os.path.join("tests", "fixtures", "bad", "nd_bad.py")
    (line,) = _annotations(["data", f"{bad}:empty_loader"], 1)
    assert line.startswith(f"::error file={bad},line={_line_of(bad, 'def empty_loader')},title=nndoctor data::")
    assert line.endswith("the training loader is empty: it yielded no batches")
