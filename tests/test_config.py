"""SPEC §2: nndoctor.yaml, --config, the command line wins, safe YAML, unknown keys."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from nndoctor.cli import app
from nndoctor.config import load_config, validate
from nndoctor.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
TARGETS = os.path.join(FIXTURES, "targets")
runner = CliRunner()

if FIXTURES not in sys.path:
    sys.path.insert(0, FIXTURES)
import nd_fake_check  # noqa: E402


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder holding a copy-free pointer to the fixture targets."""
    monkeypatch.chdir(tmp_path)
    nd_fake_check.register(monkeypatch)
    return tmp_path


def write(path, text: str) -> str:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def run_json(*args: str) -> tuple:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result, (json.loads(result.stdout) if result.exit_code in (0, 1) else None)


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


SHAPES = os.path.join(TARGETS, "nd_shapes.py")


def test_working_folder_config_names_the_target_and_settings(workdir):
    write(workdir / "nndoctor.yaml", f"""
        target: {SHAPES}:build
        seed: 7
        fail_on: warning
        fake: {{steps: 2, emit: warning}}
        size: {{input: [3, 4]}}
    """)
    result, report = run_json("check", "--only", "size,fake", "--format", "json")
    assert report["target"] == f"{SHAPES}:build"
    assert report["seed"] == 7
    assert report["size"]["input_size"] == [3, 4]
    fake = report["checks"][1]
    assert fake["metrics"]["steps"] == 2
    assert result.exit_code == 1  # fail_on: warning, and fake reported a warning


def test_command_line_wins_over_the_file(workdir):
    write(workdir / "nndoctor.yaml", f"""
        target: {SHAPES}:no_such_attr
        seed: 7
        fail_on: warning
        fake: {{emit: warning}}
        size: {{input: [3, 4]}}
    """)
    result, report = run_json("size", f"{SHAPES}:build", "--seed", "3", "--fail-on", "error",
                              "--input", "5,4", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert report["target"] == f"{SHAPES}:build" and report["seed"] == 3
    assert report["size"]["input_size"] == [5, 4]


def test_explicit_config_file_replaces_the_working_folder_one(workdir):
    write(workdir / "nndoctor.yaml", "seed: 7\n")
    other = write(workdir / "ci.yaml", f"target: {SHAPES}:build\nseed: 11\nsize: {{input: [1, 4]}}\n")
    result, report = run_json("size", "--config", other, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert report["seed"] == 11 and report["size"]["input_size"] == [1, 4]


def test_no_config_file_means_defaults(workdir):
    assert load_config(None) == {"checks": {}}
    result, report = run_json("size", f"{SHAPES}:build", "--format", "json")
    assert report["seed"] == 0 and report["device"] == "cpu"


@pytest.mark.parametrize("text, words", [
    ("seeed: 3\n", ["unknown key 'seeed'", "nndoctor.yaml"]),
    ("fake:\n  stepz: 3\n", ["unknown key fake.stepz", "known for fake: emit, scale, shape, steps"]),
    ("size:\n  inputt: [1, 4]\n", ["unknown key size.inputt"]),
    ("overfit:\n  stepz: 3\n", ["unknown key overfit.stepz"]),
    ("seed: three\n", ["'seed' must be an integer", "three"]),
    ("seed: true\n", ["'seed' must be an integer"]),
    ("fail_on: sometimes\n", ["fail_on must be error, warning or never", "sometimes"]),
    ("device: tpu\n", ["tpu"]),
    ("fake:\n  steps: many\n", ["fake.steps must be a number", "many"]),
    ("fake:\n  scale: big\n", ["fake.scale must be a number"]),
    ("fake:\n  steps: yes\n", ["fake.steps must be a number", "True"]),
    ("size: [1, 4]\n", ["'size' must be a mapping"]),
    ("- seed\n- 3\n", ["must be a mapping", "list"]),
    ("seed: 3\n  fail_on: error\n", ["invalid YAML", "nndoctor.yaml:2"]),
    ("seed: [1, 2\n", ["invalid YAML", "nndoctor.yaml:"]),
    ("seed: !!python/object:os.system {}\n", ["invalid YAML", "nndoctor.yaml:1", "python/object"]),
])
def test_config_errors_are_exit_2_naming_the_key(workdir, text, words):
    write(workdir / "nndoctor.yaml", text)
    line = one_error_line(runner.invoke(app, ["check", f"{SHAPES}:build"], catch_exceptions=False))
    for word in words:
        assert word in line, (word, line)


def test_safe_load_never_runs_yaml_tags(workdir):
    marker = workdir / "pwned"
    write(workdir / "nndoctor.yaml",
          f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(None)
    assert not marker.exists()


def test_config_target_is_used_when_target_is_omitted(workdir):
    write(workdir / "nndoctor.yaml", f"target: {SHAPES}:module_only\nsize: {{input: [2, 4]}}\n")
    result, report = run_json("check", "--only", "size", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert report["target"] == f"{SHAPES}:module_only"
    assert report["size"]["total_params"] == 4 * 8 + 8 + 8 * 3 + 3


def test_config_data_and_only(workdir):
    write(workdir / "nndoctor.yaml", f"target: {SHAPES}:module_only\n"
                                     f"data: {TARGETS}/nd_data.py:train_only\nonly: [size]\n")
    result, report = run_json("check", "--format", "json")
    assert [c["name"] for c in report["checks"]] == ["size"]
    assert report["size"]["input_size"] == [4, 4]  # the first batch of the --data loader (batch_size 4)


@pytest.mark.parametrize("section", ["lr_find", "lr-find"])
def test_lr_find_section_accepts_both_spellings(section):
    config = validate({section: None, "seed": 1}, "nndoctor.yaml")
    assert config["checks"] == {"lr-find": {}} and config["seed"] == 1


def test_valid_per_check_settings_are_kept(monkeypatch):
    nd_fake_check.register(monkeypatch)
    config = validate({"fake": {"steps": 5, "scale": 2, "emit": "error", "shape": [1, 2]},
                       "only": "size,fake", "max_seconds": 2.5}, "x.yaml")
    assert config["checks"]["fake"] == {"steps": 5, "scale": 2, "emit": "error", "shape": [1, 2]}
    assert config["only"] == "size,fake" and config["max_seconds"] == 2.5
