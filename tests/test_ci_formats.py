"""SPEC §2's CI formats: --format sarif (validated against the SARIF 2.1.0 schema),
--format markdown (rendered: the tables parse), --format github (workflow commands only,
folded past GitHub's 10 per level), and the shipped GitHub workflow, run on a sample."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nndoctor.cli import app
from nndoctor.render import render_text
from nndoctor.report.codes import CODES
from nndoctor.report.findings import CheckResult, Report, make_finding, status_from_findings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCHEMA = os.path.join(HERE, "sarif", "sarif-schema-2.1.0.json")
WORKFLOW = os.path.join(ROOT, "docs", "ci", "github-workflow.yml")
DEAD = "sample_models/dead_relu_mlp.py"
LABELS = "sample_models/label_overflow_mlp.py"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def line_of(path: str, text: str) -> int:
    with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
        return next(i for i, line in enumerate(fh, 1) if text in line)


def finding(code="dead-neurons", message="73.4% of units never fire.", where="net.1", source=None,
            severity=None):
    return make_finding(code, CODES[code].check, where, message, {"dead_pct": 73.4},
                        severity=severity, source=source)


def report_of(*findings, crashed=()) -> Report:
    checks = [CheckResult(name=f.check, status=status_from_findings([f]), seconds=0.25, findings=[f])
              for f in findings]
    checks += [CheckResult(name=name, status="error", seconds=0.1, reason=reason) for name, reason in crashed]
    return Report(target="model.py:build", device="cpu", seed=0, seconds=1.5, checks=checks)


# ------------------------------------------------------------------ SARIF

def validate_sarif(text: str) -> dict:
    jsonschema = pytest.importorskip("jsonschema")
    with open(SCHEMA, encoding="utf-8") as fh:
        schema = json.load(fh)
    log = json.loads(text)
    jsonschema.Draft4Validator(schema).validate(log)  # the normative schema is draft-04
    return log


@pytest.mark.slow
def test_sarif_of_a_real_run_validates_and_points_at_the_users_class():
    result = invoke("check", DEAD, "--only", "data,dead", "--format", "sarif")
    assert result.exit_code == 0, result.output
    log = validate_sarif(result.stdout)
    (run,) = log["runs"]
    assert log["version"] == "2.1.0"
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == Path.cwd().as_uri().rstrip("/") + "/"
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == list(CODES)  # one rule per code
    dead = rules[list(CODES).index("dead-neurons")]
    assert dead["shortDescription"]["text"] == CODES["dead-neurons"].meaning
    assert dead["fullDescription"]["text"] == CODES["dead-neurons"].why
    assert CODES["dead-neurons"].fix in dead["help"]["text"]
    assert dead["defaultConfiguration"]["level"] == "warning"
    (res,) = run["results"]
    assert res["ruleId"] == "dead-neurons" and rules[res["ruleIndex"]]["id"] == "dead-neurons"
    assert res["level"] == "warning" and "85.9%" in res["message"]["text"]
    location = res["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": DEAD, "uriBaseId": "%SRCROOT%"}
    assert location["region"]["startLine"] == line_of(DEAD, "class DeadReluMLP(")
    assert res["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "network.3"


def test_sarif_levels_crashes_and_odd_text_validate():
    info = next(c for c in CODES.values() if c.severity == "info")
    report = report_of(finding("non-finite", "NaN at step 3.", "net.2", ("dir with space/model.py", 12)),
                       finding(severity="warning"), finding(info.code, "counted 1 of 2", None),
                       crashed=[("grads", "RuntimeError: bad\nsecond line")])
    log = validate_sarif(render_text(report, "sarif"))
    run = log["runs"][0]
    assert [r["level"] for r in run["results"]] == ["error", "warning", "note"]
    uri = run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "dir%20with%20space/model.py"
    (note,) = run["invocations"][0]["toolExecutionNotifications"]
    assert note["level"] == "error" and "grads did not complete: RuntimeError: bad" in note["message"]["text"]


def test_sarif_to_a_file(tmp_path):
    out = tmp_path / "nndoctor.sarif"
    result = invoke("check", LABELS, "--only", "data", "--format", "sarif", "--output", str(out))
    assert result.exit_code == 1 and result.stdout == ""
    log = validate_sarif(out.read_text(encoding="utf-8"))
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["label-out-of-range"]


# ------------------------------------------------------------------ Markdown

def tables(markdown: str) -> list:
    """Every table of the rendered Markdown, as rows of cell texts (header first)."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    found, row, cell = [], None, None
    for token in tokens:
        if token.type == "table_open":
            found.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            found[-1].append(row)
        elif token.type in ("th_open", "td_open"):
            cell = []
        elif token.type in ("th_close", "td_close"):
            row.append("".join(cell))
        elif token.type == "inline" and cell is not None:
            cell.append("".join(child.content if child.type != "softbreak" else "\n"
                                for child in token.children))
    return found


def test_markdown_renders_the_checks_and_findings_tables():
    result = invoke("check", DEAD, "--only", "size,data,dead", "--format", "markdown")
    assert result.exit_code == 0, result.output
    checks, findings = tables(result.stdout)
    assert checks[0] == ["", "check", "status", "time", "result"]
    assert [row[1:3] for row in checks[1:]] == [["size", "pass"], ["data", "pass"], ["dead", "warning"]]
    assert checks[3][4] == "dead-neurons"
    assert findings[0] == ["severity", "code", "where", "message", "fix"]
    (row,) = findings[1:]
    assert row[:3] == ["! warning", "dead-neurons", "network.3"]
    assert "55 of the 64 units (85.9%)" in row[3] and row[4] == CODES["dead-neurons"].fix
    assert "**! 1 warning — 3 checks in" in result.stdout  # the verdict line


def test_markdown_escapes_pipes_newlines_and_html():
    report = report_of(finding(message="loss |x| < 1e-3 <b>\nsecond line", where="blocks|0"),
                       crashed=[("grads", "ValueError: a|b")])
    md = render_text(report, "markdown")
    checks, findings = tables(md)
    assert all(len(row) == 5 for row in checks + findings)  # no cell split by a `|`
    assert checks[2][4] == "ValueError: a|b"
    assert findings[1][2] == "blocks|0"
    assert findings[1][3] == "loss |x| < 1e-3 <b><br>second line"  # one line: <br> is the only tag
    assert "<b>" not in md  # the message's `<b>` is shown as text, not as HTML


# ------------------------------------------------------------------ GitHub

def test_github_prints_only_workflow_commands():
    result = invoke("check", "sample_models/mlp.py", "--only", "size,data,init", "--format", "github")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "::notice title=nndoctor%3A pass::✓ No problems found — 3 checks in "
        + re.search(r"in (\d+\.\d)s", result.stdout).group(1) + "s (sample_models/mlp.py)"]


def test_github_folds_past_ten_per_level_and_escapes(tmp_path, monkeypatch):
    info = next(c for c in CODES.values() if c.severity == "info").code
    errors = [finding("non-finite", f"NaN {i}%\r\nat step {i}", f"net.{i}", ("model.py", 3)) for i in range(13)]
    warnings = [finding(message=f"dead {i}") for i in range(10)]
    infos = [finding(info, f"note {i}", None) for i in range(9)]
    report = report_of(*errors, *warnings, *infos)
    lines = render_text(report, "github").splitlines()
    assert all(line.startswith("::") for line in lines)
    levels = [line.split(" ", 1)[0].split("::")[1] for line in lines]
    assert levels.count("error") == 10 and levels.count("warning") == 10
    assert levels.count("notice") == 10  # 8 info findings, the fold note, the verdict
    assert lines[0] == ("::error file=model.py,line=3,title=nndoctor non-finite (net.0)::NaN 0%25%0D%0Aat step 0 "
                        f"Fix: {CODES['non-finite'].fix}")
    fold = lines[-2]
    assert "4 more findings are not annotated" in fold and "3 errors, 1 notice" in fold
    assert "--format markdown" in fold  # no job summary outside GitHub
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert "are in the job summary" in render_text(report, "github").splitlines()[-2]
    result = invoke("check", LABELS, "--only", "data", "--format", "github")
    assert result.exit_code == 1
    assert [line.split(" ")[0] for line in result.stdout.splitlines()] == ["::error", "::notice"]
    written = summary.read_text(encoding="utf-8")
    assert tables(written)[1][1][1] == "label-out-of-range"  # the job summary holds the report


# ------------------------------------------------------------------ the shipped workflow

@pytest.mark.slow  # two nndoctor processes: a torch import each
def test_the_github_workflow_runs_its_nndoctor_commands(tmp_path):
    """Every `nndoctor` step of docs/ci/github-workflow.yml, run as Actions would (bash, the
    job's env, $GITHUB_STEP_SUMMARY), on a sample with two fast checks (from nndoctor.yaml)."""
    with open(WORKFLOW, encoding="utf-8") as fh:
        workflow = yaml.safe_load(fh)
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in on
    assert workflow["permissions"]["security-events"] == "write"
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif"))
    commands = [s["run"] for s in steps if "nndoctor check" in s.get("run", "")]
    assert len(commands) == 2
    with open(WORKFLOW, encoding="utf-8") as fh:
        assert _readme_workflow() == fh.read()

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "nndoctor"  # this checkout's nndoctor, as `pip install` would put it
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m nndoctor \"$@\"\n")
    shim.chmod(0o755)
    (tmp_path / "nndoctor.yaml").write_text("only: [size, data]\n")
    summary = tmp_path / "summary.md"
    env = dict(os.environ, **job.get("env", {}), **workflow.get("env", {}))
    env.update(MODEL=os.path.join(ROOT, LABELS), GITHUB_STEP_SUMMARY=str(summary),
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    outputs = [subprocess.run(["bash", "-e", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120) for command in commands]
    sarif_run, gate = outputs
    assert sarif_run.returncode == 0, sarif_run.stderr  # --fail-on never: the gate is the last step
    log = validate_sarif((tmp_path / upload["with"]["sarif_file"]).read_text(encoding="utf-8"))
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["label-out-of-range"]
    assert gate.returncode == 1, gate.stderr  # the error fails the job
    assert [line.split(" ")[0] for line in gate.stdout.splitlines()] == ["::error", "::notice"]
    assert "label-out-of-range" in summary.read_text(encoding="utf-8")


def _readme_workflow() -> str:
    """The workflow the README shows: it must be the shipped file, word for word."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    blocks = re.findall(r"^```yaml\n(# \.github/workflows/nndoctor\.yml.*?)^```", readme, re.M | re.S)
    assert len(blocks) == 1, "README shows the GitHub workflow once"
    return blocks[0]
