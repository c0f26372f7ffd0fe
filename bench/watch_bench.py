"""What `nndoctor watch` costs: the healthy sample scripts, watched vs unwatched (issue 16).

Run from the repo root:

    OMP_NUM_THREADS=1 python bench/watch_bench.py [--runs 5] [--every 50] [--scripts mlp,lstm]

One subprocess per script. In it, the script runs `--runs` times unwatched and
`--runs` times under a `Watcher` (the one `nndoctor watch` uses, default period),
through `runpy.run_path` as `nndoctor watch` runs it, alternating which side goes
first in each pair so that neither side always finds the caches warm, after one
untimed warm-up run of each (torch's first-call costs, the script's imports). The
script's stdout is discarded. Both wall time and the process's CPU time are taken:
on a shared machine the CPU time is the steadier of the two. The figure per script
is the median ratio over the pairs; the target is <= 1.05 at the default period.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "sample_scripts")
HEALTHY = ["mlp", "cnn_bn_dropout", "lstm", "transformer", "amp_bf16", "cosine"]


def _one(path: str, watched: bool, every: int) -> tuple:
    import runpy

    from nndoctor.live.observer import Watcher

    watcher = Watcher(every=every) if watched else None
    sys.argv = [path]
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        if watcher is not None:
            watcher.start()
        try:
            runpy.run_path(path, run_name="__main__")
        finally:
            if watcher is not None:
                watcher.stop()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if watcher is not None and watcher.report.findings:
        raise AssertionError(f"{path}: a healthy script got findings: {watcher.report.findings}")
    return wall, cpu


def child(name: str, runs: int, every: int) -> dict:
    path = os.path.join(SCRIPTS, f"{name}.py")
    sys.path.insert(0, SCRIPTS)
    _one(path, False, every)
    _one(path, True, every)
    pairs = []
    for run in range(runs):
        order = (False, True) if run % 2 == 0 else (True, False)
        times = {watched: _one(path, watched, every) for watched in order}
        pairs.append((times[False], times[True]))
    return {
        "script": name, "runs": runs, "every": every,
        "bare_wall_s": statistics.median(b[0] for b, _ in pairs),
        "watched_wall_s": statistics.median(w[0] for _, w in pairs),
        "wall_ratio": statistics.median(w[0] / b[0] for b, w in pairs),
        "cpu_ratio": statistics.median(w[1] / b[1] for b, w in pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--scripts", default=",".join(HEALTHY))
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.runs, args.every)))
        return
    rows = []
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(f"{'script':16} {'bare s':>8} {'watched s':>10} {'wall x':>8} {'cpu x':>8}")
    for name in args.scripts.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", name, "--runs", str(args.runs),
                              "--every", str(args.every)], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{name:16} {row['bare_wall_s']:8.2f} {row['watched_wall_s']:10.2f} "
              f"{row['wall_ratio']:8.3f} {row['cpu_ratio']:8.3f}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
