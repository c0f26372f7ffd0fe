"""The registry and the code table agree with what the checks emit.

Every code in report/codes.py has a sample (sample_models/, sample_scripts/) that
triggers it, shown by the stored golden outputs (tests/snapshots/) and the
watch tests' broken scripts, and `Code.check` is the check that emits it there
and in the source. Nothing here runs a check: the golden outputs are kept
current by test_snapshots.py, the broken scripts by test_watch.py.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import re
import subprocess
import sys
from collections import defaultdict

from conftest import ROOT
from typer.testing import CliRunner

from nndoctor import checks as registry
from nndoctor.report.codes import CODES

SNAPSHOTS = os.path.join(ROOT, "tests", "snapshots")
# a row of the Rich checks table: icon, check, status, time, result (codes or a reason)
CHECK_ROW = re.compile(r"^[✓!✗–]\s+(\S+)\s+(?:pass|warning|fail|error|skipped)\s+[\d.]+s\s+(.*)$")
WATCH_CHECK = "watch"  # the one check of a `watch` report (nndoctor/live/judge.py)


def _golden_findings() -> dict:
    """code -> {(check, sample file)} from every stored golden output."""
    seen: dict = defaultdict(set)
    for path in glob.glob(os.path.join(SNAPSHOTS, "samples", "*.json")):
        sample = os.path.join("sample_models", os.path.basename(path)[:-len(".json")] + ".py")
        with open(path, encoding="utf-8") as fh:
            for finding in json.load(fh)["findings"]:
                seen[finding["code"]].add((finding["check"], sample))
    for path in glob.glob(os.path.join(SNAPSHOTS, "readme", "*.txt")):
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        command = lines[0].split() if lines and lines[0].startswith("$ ") else []
        sample = next((w.split(":")[0] for w in command if w.split(":")[0].endswith(".py")), None)
        if sample is None:
            continue
        for line in lines[1:]:
            row = CHECK_ROW.match(line)
            if row:
                for code in row.group(2).split(", "):
                    if code.strip() in CODES:
                        seen[code.strip()].add((row.group(1), sample))
    return seen


def _watch_broken_scripts() -> dict:
    """code -> {(watch, script)} from test_watch.py's broken scripts (each run by that test)."""
    from test_watch import BROKEN

    seen: dict = defaultdict(set)
    for script, (code, _step, _where) in BROKEN.items():
        seen[code].add((WATCH_CHECK, os.path.join("sample_scripts", f"{script}.py")))
    return seen


def test_every_code_has_a_sample_that_triggers_it_from_its_check():
    seen = _golden_findings()
    for code, found in _watch_broken_scripts().items():
        seen[code] |= found
    missing = [code for code in CODES if not seen.get(code)]
    assert not missing, f"codes no golden output or broken script shows: {missing}"
    for code, found in seen.items():
        assert code in CODES, f"{code} is emitted but not in report/codes.py"
        for _check, sample in found:
            assert os.path.exists(os.path.join(ROOT, sample)), sample
        checks = {check for check, _ in found}
        # a watch run reports other checks' codes too (non-finite, exploding-gradient) as "watch"
        assert checks - {WATCH_CHECK} <= {CODES[code].check}, (code, CODES[code].check, found)
        if CODES[code].check == WATCH_CHECK:
            assert checks == {WATCH_CHECK}, (code, found)


def _emitted_in_source() -> list:
    """(file, code, check) for every make_finding("code", NAME, ...) under nndoctor/."""
    out = []
    for path in glob.glob(os.path.join(ROOT, "nndoctor", "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     for t in node.targets if isinstance(t, ast.Name)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "make_finding"
                    and len(node.args) >= 2):
                continue
            code, check = node.args[0], node.args[1]
            if isinstance(code, ast.Constant) and isinstance(check, ast.Name) and check.id in constants:
                out.append((os.path.relpath(path, ROOT), code.value, constants[check.id]))
    return out


def test_each_code_is_made_by_the_check_its_row_names():
    emitted = _emitted_in_source()
    assert len(emitted) > 30  # the parse found the checks' calls
    wrong = [(path, code, check) for path, code, check in emitted
             if check != CODES[code].check and check != WATCH_CHECK]
    assert not wrong, f"Code.check disagrees with the check that makes the finding: {wrong}"
    watch_only = {code for code, c in CODES.items() if c.check == WATCH_CHECK}
    outside = [(path, code) for path, code, check in emitted if code in watch_only and check != WATCH_CHECK]
    assert not outside, outside
    # lr_find.py picks lr-too-high or lr-too-low in a variable (the golden outputs show both)
    assert {code for _, code, _ in emitted} | {"lr-too-high"} >= set(CODES)


def test_registry_rows_match_their_modules():
    for name, info in registry.CHECKS.items():
        defaults = registry.defaults(name)
        for option in info.options:
            assert option.name in defaults, f"{name}: --{option.name} sets no setting of DEFAULTS"
        for code in info.blocks:
            assert CODES[code].check == name, (name, code)
    assert {c.check for c in CODES.values()} - {WATCH_CHECK} <= set(registry.CHECKS)


def test_every_check_command_comes_from_its_row():
    from nndoctor.cli import app

    runner = CliRunner()
    for name, info in registry.CHECKS.items():
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        if not info.help:
            assert result.exit_code == 2  # no command (static runs only inside `check`)
            continue
        assert result.exit_code == 0, result.output
        assert " ".join(info.help.split()) in " ".join(result.output.split())
        for option in info.options:
            assert option.flag in result.output, (name, option.flag)
        for shared in ("--data", "--config", "--format", "--output", "--fail-on", "--seed", "--device",
                       "--max-seconds", "--debug"):
            assert shared in result.output, (name, shared)


def test_the_registry_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-c", "import sys, nndoctor.checks, nndoctor.report.codes, "
                           "nndoctor.report.numbers; assert 'torch' not in sys.modules"],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
