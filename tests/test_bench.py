"""bench/bench.py, the README's performance command, still runs and counts the right work.

No timing is asserted (the machines are noisy): the step counts are, and that every
ratio the benchmark reports was measured and is a positive number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from nndoctor.probes import activations as scan


@pytest.fixture(scope="module")
def xor_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "xor.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "bench.py"), "--runs", "1", "--samples", "xor",
         "--with-lr-find", "--no-rss", "--no-startup", "--no-end-to-end", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())["samples"][0], proc.stdout


@pytest.mark.slow
def test_bench_counts_the_steps_check_needs(xor_bench):
    res, _ = xor_bench
    rows = {r["check"]: r for r in res["checks"]}
    # the shared run: overfit.steps = 100 steps on one batch, counted in the first check to ask
    assert rows["nan"]["train"] == 100
    # num_iter (xor's loss does not diverge before the end) + the race's, at most num_iter more
    assert 100 < rows["lr-find"]["train"] <= 200
    assert res["total"]["train"] == 100 + rows["lr-find"]["train"]
    # the scan reads batches until every unit has scan.MIN_OBSERVATIONS (xor: 8 of its 8)
    assert scan.SCAN_BATCHES <= rows["dead"]["fwd_nograd"] + rows["dead"]["fwd_grad"] <= scan.MAX_SCAN_BATCHES


@pytest.mark.slow
def test_bench_reports_every_ratio_and_the_lr_finder_floor(xor_bench):
    res, stdout = xor_bench
    assert res["total"]["ratio"] > 0 and res["total_without_lr_find"]["ratio"] > 0
    floor = res["lr_finder_floor"]
    assert floor["steps"] == 100 and floor["ratio"] > 0 and floor["bare_s"] > 0
    assert "TORCH-LR-FINDER ALONE" in stdout and "SUMMARY" in stdout


@pytest.mark.slow
def test_watch_bench_measures_every_mode_and_its_floor_leaves_the_run_as_it_was(tmp_path):
    """bench/watch_bench.py's script run (watched, and the issue's per-step floor with and
    without the norm) still runs; no timing asserted. The floor puts Tensor.backward back."""
    import torch

    backward = torch.Tensor.backward
    out = tmp_path / "watch.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "watch_bench.py"), "--runs", "1",
                           "--scripts", "cosine", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(out.read_text())[0]
    for key in ("wall_ratio", "floor_wall_ratio", "floor_norm_wall_ratio"):
        assert row[key] > 0
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import watch_bench

    with watch_bench.Floor(norm=True) as floor:
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model(torch.ones(2, 3)).sum().backward()
        optimizer.step()
        assert floor.losses == []  # read at the step, then let go
    assert torch.Tensor.backward is backward
