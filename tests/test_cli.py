"""SPEC §2 and §5 on the command line: bad input is exit 2 with one line on stderr,
a check that breaks on the user's model is status `error` and the run goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nndoctor.cli import app

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURES = os.path.join(HERE, "fixtures")
BAD = "tests/fixtures/bad/nd_bad.py"
SHAPES = "tests/fixtures/targets/nd_shapes.py"
runner = CliRunner()


def line_of(path: str, marker: str) -> int:
    with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
        for number, text in enumerate(fh, 1):
            if f"# LINE: {marker}" in text:
                return number
    raise AssertionError(f"no marker {marker} in {path}")


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def assert_usage_error(result, *words: str) -> str:
    """Exit 2, exactly one line on stderr holding `words`, no traceback, nothing on stdout."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nndoctor: error: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["tests/fixtures/bad/nope.py"], ["file not found", "nope.py"]),
    (["tests/fixtures/bad/nd_syntax.py"], ["syntax error", "tests/fixtures/bad/nd_syntax.py:7"]),
    (["tests/fixtures/bad/nd_import_raises.py"],
     ["FileNotFoundError", "set ND_MISSING_DATA_DIR_FOR_TESTS",
      f"tests/fixtures/bad/nd_import_raises.py:{line_of('tests/fixtures/bad/nd_import_raises.py', 'import-raises')}"]),
    ([f"{SHAPES}:no_such_attr"], ["nd_shapes.py", "no attribute 'no_such_attr'"]),
    ([f"{BAD}:factory_raises"], ["ValueError: checkpoint is corrupt",
                                 f"{BAD}:{line_of(BAD, 'factory-raises')}", "factory_raises"]),
    ([f"{BAD}:needs_an_argument"], ["needs_an_argument", "missing 1 required positional argument"]),
    ([f"{BAD}:wrong_type"], ["nd_bad.py:wrong_type", "gave an int", "expected an nn.Module"]),
    ([f"{BAD}:dict_unknown_key"], ["nd_bad.py", "unknown key 'modle'"]),
    ([f"{BAD}:dict_without_model"], ["nd_bad.py", "without the required key 'model'"]),
    ([f"{BAD}:tuple_too_long"], ["nd_bad.py", "tuple of 6 items"]),
    ([f"{BAD}:not_a_module"], ["nd_bad.py", "'model' is a str, not an nn.Module"]),
    (["no_such_package_xyz.models:build"], ["no module named 'no_such_package_xyz.models'"]),
    ([SHAPES, "--data", "tests/fixtures/targets/nd_data.py:raises"],
     ["RuntimeError: dataset folder missing", "tests/fixtures/targets/nd_data.py:"]),
    ([SHAPES, "--only", "sise"], ["unknown check 'sise'", "did you mean 'size'"]),
    ([SHAPES, "--skip", "size,bogus"], ["unknown check 'bogus'"]),
    ([SHAPES, "--config", "tests/fixtures/none.yaml"], ["config file not found", "none.yaml"]),
])
def test_bad_input_is_exit_2_with_one_line(args, words):
    assert_usage_error(invoke("check", *args), *words)


def test_no_target_at_all(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_usage_error(invoke("check"), "no target", "nndoctor.yaml")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda():
    assert_usage_error(invoke("size", SHAPES, "--device", "cuda"), "CUDA is not available")


def test_bad_device_choice_is_exit_2():
    result = invoke("size", SHAPES, "--device", "tpu")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "tpu" in result.stderr


def test_debug_shows_the_traceback_then_the_line():
    result = invoke("check", f"{BAD}:factory_raises", "--debug")
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert f"{BAD}\", line {line_of(BAD, 'factory-raises')}" in result.stderr.replace(ROOT + "/", "")
    assert result.stderr.strip().splitlines()[-1].startswith("nndoctor: error: ")


# ------------------------------------------------------------------ a check that breaks: status error

@pytest.mark.parametrize("attr, words", [
    ("empty_loader", ["training loader is empty"]),
    ("loader_yields_none", ["yielded None"]),
])
def test_broken_model_or_data_is_a_check_error_not_exit_2(attr, words, monkeypatch):
    sys.path.insert(0, FIXTURES) if FIXTURES not in sys.path else None
    import nd_fake_check

    nd_fake_check.register(monkeypatch, needs="")  # a second check: it must still run and report
    result = invoke("check", f"{BAD}:{attr}", "--only", "size,fake", "--format", "json")
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "error"
    statuses = {c["name"]: c for c in report["checks"]}
    assert list(statuses) == ["size", "fake"]  # both ran, in registry order
    for check in statuses.values():
        assert check["status"] == "error"
        assert "\n" not in check["reason"]
        for word in words:
            assert word in check["reason"], (word, check["reason"])


@pytest.mark.slow
def test_one_broken_forward_is_one_error_and_the_other_checks_name_it():
    """Issue 13, item 11: the forward raises on the data; it is shown once, at the first check
    that hits it; the later ones are skipped naming it; data says what it could not check."""
    result = invoke("check", f"{BAD}:shape_mismatch", "--format", "json")
    assert result.exit_code == 1, result.stderr  # still a check error (SPEC §3, §5)
    assert "Traceback" not in result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    errors = [name for name, c in checks.items() if c["status"] == "error"]
    assert errors == ["size"]
    reason = checks["size"]["reason"]
    assert reason.startswith("RuntimeError: mat1 and mat2")
    assert f"{BAD}:{line_of(BAD, 'shape-bug')}" in reason
    for name in ("init", "nan", "grads", "dead", "overfit", "lr-find"):
        assert checks[name]["status"] == "skipped"
        assert checks[name]["reason"] == "the forward pass fails (see size)", name
    assert checks["data"]["status"] == "pass"
    assert checks["data"]["reason"] == "could not check label-out-of-range: the forward pass fails (see size)"


def test_different_errors_are_each_shown(monkeypatch):
    sys.path.insert(0, FIXTURES) if FIXTURES not in sys.path else None
    import nd_fake_check

    nd_fake_check.register(monkeypatch, needs="")
    # size's forward raises; fake trains with the loss, which raises the same: skipped
    result = invoke("check", f"{BAD}:shape_mismatch", "--only", "size,fake", "--format", "json")
    statuses = {c["name"]: (c["status"], c["reason"]) for c in json.loads(result.stdout)["checks"]}
    assert statuses["size"][0] == "error" and statuses["fake"] == ("skipped", "the forward pass fails (see size)")
    # an empty loader is no forward failure: each check reports its own error, as before
    result = invoke("check", f"{BAD}:empty_loader", "--only", "init,fake", "--format", "json")
    assert {c["name"]: c["status"] for c in json.loads(result.stdout)["checks"]} == {"init": "error", "fake": "error"}


def test_check_error_does_not_hide_a_passing_check(monkeypatch):
    sys.path.insert(0, FIXTURES) if FIXTURES not in sys.path else None
    import nd_fake_check

    nd_fake_check.register(monkeypatch, needs="")
    # size measures from --input (passes), fake needs a batch from the empty loader (error).
    result = invoke("check", f"{BAD}:empty_loader", "--only", "size,fake", "--format", "json",
                    "--config", "tests/fixtures/configs/size_input.yaml")
    report = json.loads(result.stdout)
    assert {c["name"]: c["status"] for c in report["checks"]} == {"size": "pass", "fake": "error"}
    assert result.exit_code == 1
    assert invoke("check", f"{BAD}:empty_loader", "--only", "size,fake", "--format", "json",
                  "--config", "tests/fixtures/configs/size_input.yaml", "--fail-on", "never").exit_code == 0


def test_check_without_data_is_skipped_with_a_reason(monkeypatch):
    sys.path.insert(0, FIXTURES) if FIXTURES not in sys.path else None
    import nd_fake_check

    nd_fake_check.register(monkeypatch)
    result = invoke("check", f"{SHAPES}:module_only", "--only", "size,fake", "--format", "json",
                    "--config", "tests/fixtures/configs/size_input.yaml")
    assert result.exit_code == 0, result.stderr
    fake = json.loads(result.stdout)["checks"][1]
    assert fake["status"] == "skipped" and "no training data" in fake["reason"]


# ------------------------------------------------------------------ codes and explain

SPEC_CODES = [
    "loss-not-decreasing", "cannot-overfit", "vanishing-gradient", "exploding-gradient", "non-finite",
    "dead-neurons", "saturated-activations", "bad-init", "init-loss", "no-gradient", "not-in-optimizer",
    "lr-too-high", "lr-too-low", "overfitting", "underfitting", "data-non-finite", "label-out-of-range",
    "unnormalized-input", "output-activation-mismatch", "batch-dependency", "model-too-large",
]  # SPEC §3, hard-coded: the contract, not our table


def test_codes_lists_every_spec_code():
    result = invoke("codes")
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    missing = [c for c in SPEC_CODES if c not in listed]
    assert not missing
    markdown = invoke("codes", "--markdown").stdout
    assert all(f"`{c}`" in markdown or f"| {c} " in markdown for c in SPEC_CODES)


def test_codes_table_holds_spec_severities():
    from nndoctor.report.codes import CODES

    warnings = {"vanishing-gradient", "dead-neurons", "saturated-activations", "bad-init", "init-loss",
                "lr-too-high", "lr-too-low", "overfitting", "underfitting", "unnormalized-input"}
    for code in SPEC_CODES:
        assert CODES[code].severity == ("warning" if code in warnings else "error"), code
        assert CODES[code].meaning and CODES[code].why and CODES[code].fix


def test_explain_shows_meaning_why_and_fix():
    from nndoctor.report.codes import CODES

    result = invoke("explain", "dead-neurons")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for title in ("What it means", "Why it matters", "Fix"):
        assert title in text
    assert " ".join(CODES["dead-neurons"].fix.split()) in text
    assert "warning" in text


def test_explain_unknown_code_is_exit_2():
    assert_usage_error(invoke("explain", "dead-neuron"), "unknown code 'dead-neuron'", "dead-neurons")


# ------------------------------------------------------------------ the real entry point (subprocess)

def run_cli(*args: str, prefix=("nndoctor",)) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_entry_point_syntax_error_is_one_line_without_traceback():
    proc = run_cli("check", "tests/fixtures/bad/nd_syntax.py")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "tests/fixtures/bad/nd_syntax.py:7" in proc.stderr and "Traceback" not in proc.stderr


def test_help_codes_and_explain_do_not_import_torch():
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "import nndoctor.cli as cli\n"
        "r = CliRunner()\n"
        "outs = [r.invoke(cli.app, a) for a in (['--help'], ['check', '--help'], ['codes'],\n"
        "        ['explain', 'non-finite'], ['explain', 'nope'])]\n"
        "assert [o.exit_code for o in outs] == [0, 0, 0, 0, 2], [o.exit_code for o in outs]\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    proc = run_cli("-c", script, prefix=(sys.executable,))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_python_dash_m_help():
    proc = run_cli("-m", "nndoctor", "--help", prefix=(sys.executable,))
    assert proc.returncode == 0, proc.stderr
    for command in ("check", "size", "codes", "explain", "lr-find"):
        assert command in proc.stdout
