"""SPEC §6 for test suites: nndoctor.testing.assert_healthy, and the pytest plugin
(the `nndoctor` fixture and marker) run by a real pytest in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

from nndoctor import checks
from nndoctor.errors import UsageError
from nndoctor.report.codes import CODES
from nndoctor.testing import UnhealthyModelError, assert_healthy

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join("examples", "test_model_health.py")
XOR = os.path.join(ROOT, "sample_models", "xor.py")
LABELS = os.path.join(ROOT, "sample_models", "label_overflow_mlp.py")
DEAD = os.path.join(ROOT, "sample_models", "dead_relu_mlp.py")


def plugin_args() -> list:
    """`-p nndoctor.pytest_plugin` where the installed nndoctor predates its pytest11 entry
    point; nothing where it has it (pytest then loads it by itself, and refuses a second
    registration of the same module under another name)."""
    from importlib.metadata import entry_points

    found = entry_points()
    group = found.select(group="pytest11") if hasattr(found, "select") else found.get("pytest11", [])
    installed = any(ep.value == "nndoctor.pytest_plugin" for ep in group)
    if installed and not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return []
    return ["-p", "nndoctor.pytest_plugin"]


def run_pytest(*args: str, cwd: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """A real pytest, in a subprocess, with this checkout's nndoctor and its plugin."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", *plugin_args(), "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ assert_healthy

def test_assert_healthy_returns_the_report_of_a_healthy_model():
    report = assert_healthy(f"{XOR}:build", checks="size,data,init")
    assert report.status == "pass" and [c.name for c in report.checks] == ["size", "data", "init"]


def test_assert_healthy_raises_the_findings_table():
    with pytest.raises(AssertionError) as info:
        assert_healthy(LABELS, checks=["data"])
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0] == f"nndoctor: {LABELS} is not healthy (fail_on='error')"
    header = next(line for line in lines if line.startswith("severity"))
    assert header.split() == ["severity", "code", "where", "message", "and", "fix"]
    row = next(line for line in lines if line.startswith("error"))
    assert row.split()[:3] == ["error", "label-out-of-range", "network.2"]
    assert "labels range from 0 to 12" in " ".join(message.split())  # the numbers
    assert "fix: " + " ".join(CODES["label-out-of-range"].fix.split()) in " ".join(message.split())
    assert lines[-2].startswith("✗ 1 error — 1 check in")
    assert info.value.report.findings[0].code == "label-out-of-range"


def test_assert_healthy_fail_on_and_a_module():
    sys.path.insert(0, os.path.dirname(DEAD))
    try:
        import dead_relu_mlp
    finally:
        sys.path.remove(os.path.dirname(DEAD))
    setup = dead_relu_mlp.build()
    assert assert_healthy(setup, checks=["dead"]).status == "warning"  # a warning passes the default gate
    with pytest.raises(UnhealthyModelError, match="dead-neurons"):
        assert_healthy(setup, checks=["dead"], fail_on="warning")
    model, loader = setup["model"], setup["train_loader"]
    assert assert_healthy(model, loader, checks=["dead"], fail_on="never").findings[0].where == "network.3"


def test_assert_healthy_keeps_a_budget_and_reports_its_plan():
    report = assert_healthy(XOR, budget=30)
    assert set(report.to_dict()["plan"]) <= set(checks.CHECKS)
    with pytest.raises(UsageError, match="budget"):
        assert_healthy(XOR, budget=0)


def test_pyproject_declares_the_pytest11_entry_point():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)["project"]
    assert project["entry-points"]["pytest11"] == {"nndoctor": "nndoctor.pytest_plugin"}


# ------------------------------------------------------------------ the plugin

SUITE = f"""
import sys
import pytest

XOR, LABELS, DEAD = {XOR!r}, {LABELS!r}, {DEAD!r}

def test_plain_test_does_not_import_torch():
    assert "torch" not in sys.modules  # the plugin alone costs nothing

@pytest.mark.nndoctor(target=XOR, checks=["size", "data"])
def test_marker_healthy():
    pass

@pytest.mark.nndoctor(target=LABELS + ":build", checks="data")
def test_marker_broken():
    pass

@pytest.mark.nndoctor(checks=["dead"], fail_on="warning")
def test_marker_on_what_the_test_returns():
    sys.path.insert(0, DEAD.rsplit("/", 1)[0])
    import dead_relu_mlp
    return dead_relu_mlp.build()

@pytest.mark.nndoctor(checks=["data"])
def test_marker_without_a_target():
    pass

@pytest.mark.nndoctor(target="no/such/model.py", checks=["data"])
def test_marker_on_a_missing_file():
    pass

def test_fixture(nndoctor):
    report = nndoctor(XOR, checks=["data"])
    assert report.status == "pass"
    assert nndoctor(DEAD, checks=["dead"], fail_on="never").status == "warning"
"""


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("suite")
    (folder / "test_suite.py").write_text(textwrap.dedent(SUITE))
    proc = run_pytest("-q", "--junitxml=junit.xml", "-p", "no:randomly", cwd=str(folder))
    cases = {case.get("name"): case for case in ET.parse(folder / "junit.xml").getroot().iter("testcase")}
    return proc, cases


@pytest.mark.slow
def test_plugin_outcomes(plugin_run):
    proc, cases = plugin_run
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = {name for name, case in cases.items() if case.find("failure") is not None}
    assert failed == {"test_marker_broken", "test_marker_on_what_the_test_returns", "test_marker_without_a_target",
                      "test_marker_on_a_missing_file"}
    assert "4 failed, 3 passed" in proc.stdout


@pytest.mark.slow
def test_plugin_failure_shows_the_findings_table(plugin_run):
    proc, cases = plugin_run
    section = proc.stdout.split("_ test_marker_broken _", 1)[1].split("\n___", 1)[0]
    assert "label-out-of-range   network.2" in section and "fix: Make the output layer" in section
    assert "site-packages" not in section and "pytest_plugin.py" not in section  # no plugin frames
    failure = cases["test_marker_broken"].find("failure")
    assert "label-out-of-range" in failure.get("message") and "labels range from 0 to 12" in failure.get("message")
    props = {p.get("name"): p.get("value") for p in cases["test_marker_broken"].iter("property")}
    assert props["nndoctor_status"] == "error"
    assert props["nndoctor_error"].startswith("label-out-of-range at network.2: ")
    assert "needs target=" in cases["test_marker_without_a_target"].find("failure").get("message")
    missing = cases["test_marker_on_a_missing_file"].find("failure").get("message")
    assert missing == "Failed: nndoctor: file not found: no/such/model.py"  # one line, no traceback
    assert "dead-neurons" in cases["test_marker_on_what_the_test_returns"].find("failure").get("message")
    assert {p.get("value") for p in cases["test_fixture"].iter("property")} >= {"pass", "warning"}


@pytest.mark.slow  # a second pytest process (the plugin itself is covered by plugin_run)
def test_the_example_file_fails_on_the_broken_sample_and_passes_on_the_healthy_one():
    """SPEC §6's promise, from a clean clone: pytest on examples/test_model_health.py."""
    proc = run_pytest(EXAMPLE, "-q", "-rN", cwd=ROOT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 3 passed" in proc.stdout
    assert "FAILED" not in proc.stdout.replace("test_broken_labels - ", "")  # only the broken one
    failure = proc.stdout.split("_ test_broken_labels _", 1)[1]
    for text in ("severity", "code", "where", "message and fix", "label-out-of-range", "network.2",
                 "labels range from 0 to 12", "fix: Make the output layer"):
        assert text in failure, text


@pytest.mark.slow
def test_the_plugin_under_xdist():
    pytest.importorskip("xdist")
    proc = run_pytest(EXAMPLE, "-q", "-n", "2", cwd=ROOT, timeout=400)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 3 passed" in proc.stdout and "label-out-of-range   network.2" in proc.stdout
