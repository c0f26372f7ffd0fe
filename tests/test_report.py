"""SPEC §4/§5: the JSON report, JUnit, GitHub annotations, --output, status and exit codes."""

from __future__ import annotations

import json
import math
import os
import sys
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from nndoctor.cli import app
from nndoctor.render import render_text
from nndoctor.report.findings import CheckResult, Report, make_finding, status_from_findings

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
SHAPES = "tests/fixtures/targets/nd_shapes.py"
runner = CliRunner()

if FIXTURES not in sys.path:
    sys.path.insert(0, FIXTURES)
import nd_fake_check  # noqa: E402

TOP_KEYS = {"nndoctor", "target", "device", "seed", "seconds", "status", "checks", "findings"}
CHECK_KEYS = {"name", "status", "seconds", "reason", "metrics"}
FINDING_KEYS = {"code", "severity", "check", "where", "message", "evidence", "fix"}


def warning_finding():
    return make_finding("dead-neurons", "dead", "net.1", "73.4% of units never fire.", {"dead_pct": 73.4})


def error_finding():
    return make_finding("non-finite", "nan", "net.2", "NaN at step 3.",
                        {"loss": float("nan"), "grad": float("inf"), "low": float("-inf")},
                        source=("model.py", 12))


def report_of(*checks) -> Report:
    return Report(target="model.py:build", device="cpu", seed=0, seconds=1.5, checks=list(checks))


def check(name, status=None, findings=(), reason=None):
    findings = list(findings)
    return CheckResult(name=name, status=status or status_from_findings(findings), seconds=0.25,
                       reason=reason, findings=findings, metrics={"n": 1})


# ------------------------------------------------------------------ status and exit code

@pytest.mark.parametrize("checks, status, exits", [
    # exits: (--fail-on error, warning, never)
    ([check("size")], "pass", (0, 0, 0)),
    ([check("size"), check("skipped", "skipped", reason="no data")], "pass", (0, 0, 0)),
    ([check("dead", findings=[warning_finding()])], "warning", (0, 1, 0)),
    ([check("nan", findings=[error_finding()])], "error", (1, 1, 0)),
    ([check("dead", findings=[warning_finding(), error_finding()])], "error", (1, 1, 0)),
    ([check("size"), check("grads", "error", reason="RuntimeError: boom")], "error", (1, 1, 0)),
    ([check("x", findings=[make_finding("dead-neurons", "x", None, "m", severity="info")])],
     "pass", (0, 0, 0)),
])
def test_status_and_exit_codes(checks, status, exits):
    report = report_of(*checks)
    assert report.status == status
    assert tuple(report.exit_code(f) for f in ("error", "warning", "never")) == exits


def test_check_status_follows_its_worst_finding():
    assert status_from_findings([]) == "pass"
    assert status_from_findings([warning_finding()]) == "warning"
    assert status_from_findings([warning_finding(), error_finding()]) == "fail"


def test_exit_code_rejects_an_unknown_bar():
    with pytest.raises(ValueError):
        report_of(check("size")).exit_code("sometimes")


# ------------------------------------------------------------------ JSON

def test_json_has_every_spec_key_and_non_finite_numbers_stay_valid():
    report = report_of(check("dead", findings=[warning_finding()]), check("nan", findings=[error_finding()]),
                       check("fit", "skipped", reason="no validation loader"))
    text = render_text(report, "json")
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert TOP_KEYS <= set(data)
    assert data["status"] == "error" and data["seconds"] == 1.5 and data["target"] == "model.py:build"
    assert [c["name"] for c in data["checks"]] == ["dead", "nan", "fit"]
    for c in data["checks"]:
        assert set(c) == CHECK_KEYS
    assert data["checks"][2] == {"name": "fit", "status": "skipped", "seconds": 0.25,
                                 "reason": "no validation loader", "metrics": {"n": 1}}
    for f in data["findings"]:
        assert set(f) == FINDING_KEYS
    nan_finding = data["findings"][1]
    assert nan_finding["evidence"] == {"loss": "nan", "grad": "inf", "low": "-inf"}
    assert nan_finding["fix"].startswith("Lower the LR")
    assert data["findings"][0]["evidence"] == {"dead_pct": 73.4}


def test_json_converts_tensors_and_numpy_values():
    import numpy as np
    import torch

    finding = make_finding("dead-neurons", "dead", None, "m",
                           {"t": torch.tensor(2.5), "v": torch.tensor([1.0, float("nan")]),
                            "n": np.float32(0.5), "i": np.int64(3)})
    data = json.loads(render_text(report_of(check("dead", findings=[finding])), "json"))
    assert data["findings"][0]["evidence"] == {"t": 2.5, "v": [1.0, "nan"], "n": 0.5, "i": 3}


def test_cli_json_stdout_is_only_the_report_even_when_the_target_prints():
    result = runner.invoke(app, ["size", "tests/fixtures/targets/nd_prints.py", "--input", "2,4",
                                 "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert TOP_KEYS | {"size", "notes"} <= set(data)
    assert data["size"]["total_params"] == 4 * 2 + 2
    assert data["size"]["input_size"] == [2, 4]
    assert "building the model" in result.stderr
    assert "building the model" not in result.stdout


def test_cli_json_end_to_end_with_findings(monkeypatch, tmp_path):
    nd_fake_check.register(monkeypatch)
    config = tmp_path / "c.yaml"
    config.write_text("fake: {emit: both, steps: 2}\n")
    result = runner.invoke(app, ["check", f"{SHAPES}:build", "--only", "fake", "--format", "json",
                                 "--config", str(config), "--seed", "5"], catch_exceptions=False)
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["seed"] == 5 and data["device"] == "cpu" and data["nndoctor"] == "0.1.0"
    assert data["status"] == "error"
    assert [(f["code"], f["severity"], f["check"], f["where"]) for f in data["findings"]] == [
        ("dead-neurons", "warning", "fake", "0"), ("non-finite", "error", "fake", "2")]
    assert data["findings"][1]["evidence"]["loss"] == "nan"
    assert data["checks"][0]["status"] == "fail"
    assert math.isfinite(data["checks"][0]["metrics"]["first_loss"])
    assert any("CrossEntropyLoss" in n for n in data["notes"])


@pytest.mark.parametrize("emit, fail_on, code", [
    ("none", None, 0), ("warning", None, 0), ("warning", "warning", 1), ("error", None, 1),
    ("error", "never", 0), ("error", "warning", 1),
])
def test_cli_fail_on(monkeypatch, tmp_path, emit, fail_on, code):
    nd_fake_check.register(monkeypatch)
    config = tmp_path / "c.yaml"
    config.write_text(f"fake: {{emit: {emit}, steps: 1}}\n")
    args = ["check", f"{SHAPES}:build", "--only", "fake", "--format", "json", "--config", str(config)]
    result = runner.invoke(app, args + (["--fail-on", fail_on] if fail_on else []), catch_exceptions=False)
    assert result.exit_code == code, result.stderr


def test_output_file_gets_the_report_and_stdout_stays_empty(tmp_path):
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["size", f"{SHAPES}:module_only", "--input", "1,4", "--format", "json",
                                 "--output", str(out)], catch_exceptions=False)
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text())["size"]["total_params"] == 4 * 8 + 8 + 8 * 3 + 3
    rich_out = tmp_path / "report.txt"
    result = runner.invoke(app, ["size", f"{SHAPES}:module_only", "--input", "1,4", "--output", str(rich_out)],
                           catch_exceptions=False)
    assert result.exit_code == 0
    text = rich_out.read_text()
    assert "size" in text and "No problems found" in text and "\x1b[" not in text


def test_rich_report_shows_checks_findings_and_verdict():
    from rich.console import Console

    console = Console(record=True, width=80, file=open(os.devnull, "w"))
    report = report_of(check("nan", findings=[error_finding()]), check("grads", "error", reason="boom here"))
    report.notes = ["criterion: MSELoss (chosen: the targets are floats)"]
    console.print(report)
    text = console.export_text()
    for piece in ("non-finite", "net.2", "NaN at step 3.", "boom here", "criterion: MSELoss", "✗"):
        assert piece in text
    assert max(len(line) for line in text.splitlines()) <= 80


# ------------------------------------------------------------------ JUnit

def test_junit_one_testcase_per_check_error_findings_as_failures():
    report = report_of(check("size"), check("dead", findings=[warning_finding()]),
                       check("nan", findings=[error_finding()]),
                       check("grads", "error", reason="RuntimeError: bad\x1b[31m shape"),
                       check("fit", "skipped", reason="no validation loader"))
    root = ET.fromstring(render_text(report, "junit").split("\n", 1)[1])
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["size", "dead", "nan", "grads", "fit"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == \
        ("5", "1", "1", "1")
    by_name = {c.get("name"): c for c in cases}
    assert list(by_name["size"]) == []  # a pass: an empty testcase
    assert by_name["dead"].find("failure") is None  # a warning is not a failure...
    assert "dead-neurons" in by_name["dead"].find("system-out").text  # ... but it is shown
    failure = by_name["nan"].find("failure")
    assert failure.get("type") == "non-finite" and failure.get("message") == "NaN at step 3."
    assert "fix:" in failure.text
    assert by_name["grads"].find("error").get("message").startswith("RuntimeError: bad")
    assert by_name["fit"].find("skipped").get("message") == "no validation loader"
    for case in cases:
        assert float(case.get("time")) == 0.25


def test_cli_junit_parses(tmp_path):
    out = tmp_path / "junit.xml"
    result = runner.invoke(app, ["size", f"{SHAPES}:module_only", "--input", "1,4", "--format", "junit",
                                 "--output", str(out)], catch_exceptions=False)
    assert result.exit_code == 0
    root = ET.parse(out).getroot()
    assert [c.get("name") for c in root.iter("testcase")] == ["size"]


# ------------------------------------------------------------------ GitHub

def test_github_annotations():
    report = report_of(check("dead", findings=[warning_finding()]), check("nan", findings=[error_finding()]),
                       check("grads", "error", reason="RuntimeError: 50% of it, a:b\nsecond line"))
    lines = render_text(report, "github").splitlines()
    errors = [line for line in lines if line.startswith("::error ")]
    warnings = [line for line in lines if line.startswith("::warning ")]
    assert len(errors) == 2 and len(warnings) == 1
    finding_line = next(line for line in errors if "non-finite" in line)
    assert finding_line.startswith("::error file=model.py,line=12,title=nndoctor non-finite (net.2)::")
    crash_line = next(line for line in errors if "grads" in line)
    assert "50%25 of it" in crash_line and "%0Asecond line" in crash_line  # escaped: one line each
    assert warnings[0].startswith("::warning title=nndoctor dead-neurons (net.1)::73.4%25 of units")
    assert all(line.startswith("::") for line in lines)  # workflow commands and nothing else
    assert lines[-1] == "::notice title=nndoctor%3A error::✗ 1 error, 1 warning, 1 check did not complete — 3 checks in 1.5s (model.py:build)"


def test_github_annotation_of_a_crashing_check_points_at_the_users_line():
    result = runner.invoke(app, ["size", "tests/fixtures/bad/nd_bad.py:shape_mismatch", "--format", "github"],
                           catch_exceptions=False)
    assert result.exit_code == 1
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("::error")]
    with open(os.path.join(HERE, "fixtures", "bad", "nd_bad.py")) as fh:
        bug_line = next(i for i, t in enumerate(fh, 1) if "# LINE: shape-bug" in t)
    assert f"file=tests/fixtures/bad/nd_bad.py,line={bug_line}," in line
    assert "mat1 and mat2" in line
