"""The README stays true to the code: its codes table, its set-up commands, its config example.

Fast: nothing here runs a check.
"""

from __future__ import annotations

import os
import re

import pytest

from nndoctor.report import codes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
CI_RUN = os.path.join(ROOT, ".ci", "run")
CODES_START, CODES_END = "<!-- CODES -->", "<!-- /CODES -->"


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def readme() -> str:
    return _read(README)


def _section(text: str, heading: str) -> str:
    """The body of a `## heading` section, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def _fenced_blocks(text: str, lang: str) -> list:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)


def _commands(block: str) -> list:
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


# --------------------------------------------------------------------------- codes table

def test_codes_table_is_exactly_the_generated_one(readme):
    assert readme.count(CODES_START) == 1 and readme.count(CODES_END) == 1
    between = readme.split(CODES_START, 1)[1].split(CODES_END, 1)[0]
    assert between.strip("\n") == codes.markdown_table(), (
        "the README's codes table is stale: paste `nndoctor codes --markdown` between the markers")


def test_codes_table_lists_every_code(readme):
    between = readme.split(CODES_START, 1)[1].split(CODES_END, 1)[0]
    listed = re.findall(r"^\| `([a-z-]+)` \|", between, re.M)
    assert listed == list(codes.CODES)


# --------------------------------------------------------------------------- set-up commands

def _ci_command() -> str:
    lines = [line.strip() for line in _read(CI_RUN).splitlines()]
    commands = [line for line in lines
                if line and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert len(commands) == 1, f".ci/run should run one command, found {commands}"
    return commands[0]


def test_setup_section_has_exactly_two_commands(readme):
    blocks = _fenced_blocks(_section(readme, "Set-up: two commands"), "bash")
    assert len(blocks) == 1
    assert len(_commands(blocks[0])) == 2


def test_setup_test_command_is_what_ci_runs(readme):
    first, second = _commands(_fenced_blocks(_section(readme, "Set-up: two commands"), "bash")[0])
    assert second == _ci_command()


def test_setup_first_command_installs_as_ci_does_and_runs_a_sample(readme):
    first, _ = _commands(_fenced_blocks(_section(readme, "Set-up: two commands"), "bash")[0])
    ci_steps = [s.strip() for s in _ci_command().split("&&")]
    steps = [s.strip() for s in first.split("&&")]
    assert steps[0] == ci_steps[0], "both commands pin the same torch"
    assert steps[1] == re.sub(r"'\.\[[\w,]+\]'", ".", ci_steps[1]), "the same editable install, without extras"
    assert len(steps) == 3 and steps[2].startswith("nndoctor check ")
    sample = steps[2].split()[2].split(":")[0]
    assert os.path.isfile(os.path.join(ROOT, sample)), sample


def test_setup_commands_come_first(readme):
    """A practitioner finds how to install and run it before anything else."""
    headings = re.findall(r"^## (.+)$", readme, re.M)
    assert headings[0] == "Set-up: two commands"


# --------------------------------------------------------------------------- what the README names exists

def test_every_documented_command_exists(readme):
    import typer.main

    from nndoctor.cli import app

    commands = set(typer.main.get_command(app).commands)
    documented = set(re.findall(r"^\$ nndoctor ([a-z][a-z-]*)", readme, re.M))
    documented |= set(re.findall(r"^nndoctor ([a-z][a-z-]*) ", readme, re.M))
    assert documented, "no command found in the README"
    assert documented <= commands, documented - commands
    # ... and every command is documented with a real run
    shown = set(re.findall(r"^\$ nndoctor ([a-z][a-z-]*)", readme, re.M))
    assert commands <= shown, f"commands without an example: {sorted(commands - shown)}"


def test_every_sample_and_fixture_named_exists(readme):
    paths = set(re.findall(r"\b((?:sample_models|tests/fixtures)/[\w/]+\.py)\b", readme))
    assert paths
    missing = sorted(p for p in paths if not os.path.isfile(os.path.join(ROOT, p)))
    assert not missing, missing
    names = set(re.findall(r"^\| `(\w+)` \|", _section(readme, "Broken models"), re.M))
    missing = sorted(n for n in names if not os.path.isfile(os.path.join(ROOT, "sample_models", f"{n}.py")))
    assert not missing, missing


# --------------------------------------------------------------------------- config example

def test_config_example_is_valid(readme):
    from nndoctor import checks as registry
    from nndoctor.config import validate

    yaml = pytest.importorskip("yaml")
    blocks = _fenced_blocks(_section(readme, "Configuration"), "yaml")
    assert blocks, "the Configuration section has no yaml example"
    config = validate(yaml.safe_load(blocks[0]), "README.md")  # unknown keys raise ConfigError
    missing = [name for name in registry.CHECKS if name not in config["checks"]]
    assert not missing, f"the README's config example has no section for {missing}"


def test_performance_section_is_kept(readme):
    assert "## Performance" in readme
