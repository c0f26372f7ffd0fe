"""Golden outputs (tools/snapshots.py): the README shows real runs, and outputs don't drift.

The fast tests check the README against the stored snapshots; the slow ones re-run every
sample and README example and compare, timings masked. `pytest --update-snapshots`
rewrites the snapshots and the README's outputs instead of comparing.
"""

from __future__ import annotations

import os
import re
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import snapshots  # noqa: E402

# On a CPU of another vendor than the snapshots' the floats differ: numbers and plots are then
# compared loosely (tools/snapshots.py, CPU_FILE; a full `python tools/snapshots.py` records
# the vendor, an update of some of them here leaves it as it is), everything else exactly.
LOOSE = bool(snapshots.other_cpu())


@pytest.fixture(scope="module")
def readme() -> str:
    return snapshots.read(snapshots.README)


def test_every_example_has_one_readme_marker(readme):
    markers = re.findall(r"^<!-- snapshot: ([\w-]+) -->$", readme, re.M)
    assert sorted(markers) == sorted(snapshots.EXAMPLES), "README markers and tools/snapshots.py disagree"
    assert len(markers) == len(set(markers))


def test_every_console_run_in_the_readme_is_a_snapshot(readme):
    """No hand-edited output: each ```console block that runs nndoctor sits under a marker."""
    lines = readme.splitlines()
    unmarked = [lines[i + 1] for i, line in enumerate(lines[:-1])
                if line == "```console" and lines[i + 1].startswith("$ nndoctor")
                and not (i and lines[i - 1].startswith("<!-- snapshot: "))]
    assert not unmarked, unmarked


def test_readme_blocks_are_the_stored_snapshots(readme):
    blocks = snapshots.readme_blocks(readme)
    stale = [name for name in snapshots.EXAMPLES
             if blocks.get(name, (None, None))[1] != snapshots.read(snapshots.readme_path(name))]
    assert not stale, f"README outputs differ from tests/snapshots/readme/: {stale}; run python tools/snapshots.py"


def test_every_sample_has_a_snapshot():
    missing = [name for name in snapshots.sample_names()
               if not all(os.path.exists(p) for p in snapshots.sample_paths(name))]
    assert not missing, f"no snapshot for {missing}: run python tools/snapshots.py --only {','.join(missing)}"


def test_loose_comparison_masks_numbers_and_plots_but_not_findings():
    """On another CPU vendor's floats: a number, a plot row or a curve a point longer is no
    drift; another code, word or finding is."""
    stored = ("✗ lr-too-high  error  current LR 0.05 is 12x the suggestion\n"
              "│⢄⣀⣀⣀⠤⠒ │\n  curve; the task may need more than 96 steps to show progress\n")
    fresh = ("✗ lr-too-high  error  current LR 0.05 is 13.4x the suggestion\n"
             "│⢄⣀⠤⠤⠒⠒⠉ │\n  curve; the task may need more than 97 steps to show progress\n")
    assert snapshots.drift(stored, fresh, "a.txt") and not snapshots.drift(stored, fresh, "a.txt", loose=True)
    assert snapshots.drift(stored, fresh.replace("lr-too-high", "lr-too-low"), "a.txt", loose=True)
    a = '{"findings": [{"code": "dead-neurons", "value": 0.5}], "losses": [1.0, 0.5], "ok": true}'
    b = '{"findings": [{"code": "dead-neurons", "value": 0.61}], "losses": [1.1, 0.5, 0.4], "ok": true}'
    assert snapshots.drift(a, b, "a.json") and not snapshots.drift(a, b, "a.json", loose=True)
    assert snapshots.drift(a, b.replace("dead-neurons", "no-gradient"), "a.json", loose=True)
    assert snapshots.drift(a, b.replace("true", "false"), "a.json", loose=True)


def test_masking_ignores_timings_only():
    a = "✓   nan       pass     0.6s   ok\n✓ No problems found — 9 checks in 1.9s"
    b = "✓   nan       pass     10.6s   ok\n✓ No problems found — 9 checks in 12.0s"
    assert snapshots.masked(a) == snapshots.masked(b)
    assert snapshots.masked(a) != snapshots.masked(a.replace("pass", "fail"))


def test_masking_drops_watchs_paced_observations_note_only():
    """Whether watch's scans reached enough observations depends on the machine's speed (their
    pacing), as timings do; every other note and line still counts."""
    note = "note: dead-neurons: not enough observations for a verdict on `1`: fewer\nthan 299 per unit\n\n"
    a = "finding\n\n" + note + "✗ 1 error — 1 check in 2.3s\n"
    b = "finding\n\n✗ 1 error — 1 check in 2.0s\n"
    assert snapshots.masked(a) == snapshots.masked(b)
    assert snapshots.masked(a.replace("dead-neurons: not enough", "lr-collapsed: not enough")) != snapshots.masked(b)


def test_the_dropped_note_leaves_no_extra_blank_line_and_json_floats_allow_round_off_only():
    fix = "   → Call scaler.unscale_(optimizer) first.\n\n"
    note = "note: dead-neurons: not enough observations for a verdict on `1`, `3`: fewer\nthan 299 per unit\n\n"
    end = "✗ 1 error — 1 check in 1.8s\n"
    assert snapshots.masked(fix + note + end) == snapshots.masked(fix + "\n" + end.replace("1.8s", "2.0s"))
    stored = '{"final": 0.13338494300842285, "mean": 2.613e-10, "steps": 80}'
    assert not snapshots.drift(stored, '{"final": 0.13338492810726166, "mean": 2.765e-10, "steps": 80}', "a.json")
    assert snapshots.drift(stored, '{"final": 0.1354, "mean": 2.613e-10, "steps": 80}', "a.json")
    assert snapshots.drift(stored, '{"final": 0.13338494300842285, "mean": 2.613e-10, "steps": 81}', "a.json")


@pytest.mark.slow
@pytest.mark.parametrize("name", snapshots.sample_names())
def test_sample_output_has_not_drifted(name, request):
    text, data = snapshots.run_sample(name)
    paths = snapshots.sample_paths(name)
    if request.config.getoption("--update-snapshots"):
        for path, fresh in zip(paths, (text, data)):
            snapshots.write(path, fresh)
        return
    for path, fresh in zip(paths, (text, data)):
        assert os.path.exists(path), f"no snapshot {path}: run pytest --update-snapshots"
        diff = snapshots.drift(snapshots.read(path), fresh, os.path.relpath(path, ROOT), LOOSE)
        assert not diff, diff


@pytest.mark.slow
@pytest.mark.parametrize("name", list(snapshots.EXAMPLES))
def test_readme_example_has_not_drifted(name, request):
    fresh = snapshots.run_example(snapshots.EXAMPLES[name])
    path = snapshots.readme_path(name)
    if request.config.getoption("--update-snapshots"):
        snapshots.write(path, fresh)
        snapshots.write_readme()
        return
    diff = snapshots.drift(snapshots.read(path), fresh, os.path.relpath(path, ROOT), LOOSE)
    assert not diff, diff
