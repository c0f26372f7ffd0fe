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
Beside it, the same script under `Floor`: only what any watcher of the issue's design must
do on every step (the global optimizer hooks, the backward wrapper, one host sync of the
loss; `floor+norm`: of the loss and the total gradient norm), so that a script whose floor is
already over the target shows it.

    OMP_NUM_THREADS=1 python bench/watch_bench.py --micro [--runs 9] [--widths 64,256,1024]

The micro-loop instead: a 2-layer MLP (20 -> width -> 4, batch 64, SGD with momentum) for
1,000 steps in one process, unwatched and watched (default period) interleaved, `--runs`
pairs per width, the process's CPU time per step. The figure is the watched minus the
unwatched microseconds a step (median over the pairs): a fixed cost per step, steadier
than the scripts' wall ratios on a loaded machine; with the median step's, and the CPU time
of the fastest block of steps between two sampled ones (the steadiest of the three). Then
the watcher's own hook work, called directly in a loop (`hook_work`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "sample_scripts")
HEALTHY = ["mlp", "cnn_bn_dropout", "lstm", "transformer", "amp_bf16", "cosine"]


class Floor:
    """The least any watcher of the issue's design costs: torch's global optimizer step hooks,
    `Tensor.backward` wrapped to see the loss, and per step one host sync of the loss alone
    (`norm=False`) or of the loss and the total gradient norm (`norm=True`, the issue's "every
    step the loss and total gradient norm with one host sync"); nothing kept, nothing judged."""

    def __init__(self, norm: bool):
        self.norm = norm
        self.losses: list = []
        self.handles: list = []
        self.original = None

    def __enter__(self):
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        self.original = original = torch.Tensor.backward
        losses = self.losses

        def backward(tensor, *args, **kwargs):
            if tensor.numel() == 1:
                losses.append(tensor.detach())
            return original(tensor, *args, **kwargs)

        def pre(optimizer, args, kwargs):
            if not losses:
                return
            if self.norm:
                grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
                torch.stack([losses[-1].float()] + list(torch._foreach_norm(grads, 2))).tolist()
            else:
                losses[-1].item()
            losses.clear()

        torch.Tensor.backward = backward
        self.handles = [register_optimizer_step_pre_hook(pre),
                        register_optimizer_step_post_hook(lambda optimizer, args, kwargs: None)]
        return self

    def __exit__(self, *exc):
        import torch

        torch.Tensor.backward = self.original
        for handle in self.handles:
            handle.remove()
        return False


MODES = ("bare", "floor", "floor_norm", "watched")


def _one(path: str, mode: str, every: int) -> tuple:
    import runpy

    from nndoctor.live.observer import Watcher

    watcher = Watcher(every=every) if mode == "watched" else None
    floor = Floor(norm=mode == "floor_norm") if mode.startswith("floor") else contextlib.nullcontext()
    sys.argv = [path]
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()), floor:
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
    for mode in MODES:
        _one(path, mode, every)
    times: dict = {mode: [] for mode in MODES}
    for run in range(runs):  # each run in another order, so that no mode always finds warm caches
        order = MODES[run % len(MODES):] + MODES[:run % len(MODES)]
        for mode in (order if run % 2 == 0 else order[::-1]):
            times[mode].append(_one(path, mode, every))
    bare = times["bare"]
    row = {"script": name, "runs": runs, "every": every,
           "bare_wall_s": statistics.median(b[0] for b in bare),
           "watched_wall_s": statistics.median(w[0] for w in times["watched"])}
    for mode in MODES[1:]:
        prefix = "" if mode == "watched" else f"{mode}_"
        row[f"{prefix}wall_ratio"] = statistics.median(w[0] / b[0] for b, w in zip(bare, times[mode]))
        row[f"{prefix}cpu_ratio"] = statistics.median(w[1] / b[1] for b, w in zip(bare, times[mode]))
    return row


def micro(width: int, runs: int, every: int, steps: int = 1000) -> dict:
    """The per-step cost on a bare loop (see the module docstring), microseconds."""
    import torch
    import torch.nn as nn

    from nndoctor.live.observer import Watcher

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, width), nn.ReLU(), nn.Linear(width, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))
    clock = time.perf_counter

    def loop(watched: bool, n: int) -> tuple:
        watcher = Watcher(every=every) if watched else None
        if watcher is not None:
            watcher.start()
        times, blocks = [], []
        began = time.process_time()
        try:
            for i in range(n):
                if i % every == 1:
                    block = time.thread_time()
                t = clock()
                opt.zero_grad()
                criterion(model(x), y).backward()
                opt.step()
                times.append(clock() - t)
                if i % every == every - 1 and every > 2:
                    blocks.append((time.thread_time() - block) / (every - 1))
        finally:
            seconds = time.process_time() - began
            if watcher is not None:
                watcher.stop()
        return seconds / n * 1e6, statistics.median(times) * 1e6, min(blocks, default=math.nan) * 1e6

    loop(False, 200)
    loop(True, 200)
    pairs = []
    for run in range(runs):
        order = (False, True) if run % 2 == 0 else (True, False)
        times = {watched: loop(watched, steps) for watched in order}
        pairs.append((times[False], times[True]))
    return {"width": width, "runs": runs, "steps": steps,
            "bare_us": statistics.median(b[0] for b, _ in pairs),
            "added_us": statistics.median(w[0] - b[0] for b, w in pairs),
            "ratio": statistics.median(w[0] / b[0] for b, w in pairs),
            # the median step (wall): what a step that is neither sampled nor reads the norm costs;
            # a step preempted by another process is an outlier, which the median ignores
            "median_step_bare_us": statistics.median(b[1] for b, _ in pairs),
            "median_step_added_us": statistics.median(w[1] - b[1] for b, w in pairs),
            # the CPU time of the blocks of steps between two sampled ones (norm reads and judges
            # included, no sampled step, no scan), the fastest block of all the pairs: the
            # steadiest figure of the fixed cost on a loaded machine
            "block_bare_us": min(b[2] for b, _ in pairs),
            "block_added_us": min(w[2] for _, w in pairs) - min(b[2] for b, _ in pairs)}


def hook_work(repeats: int = 50, steps: int = 200) -> dict:
    """The watcher's own per-step work in isolation: its forward pre-hook, the loss the backward
    wrapper keeps, and its optimizer pre/post hooks, called directly (no forward, backward or
    update), the default period, `steps` steps per repeat (four sampled); microseconds a step, min and median
    over the repeats (the min is the steadiest figure on a loaded machine). It leaves out what
    only a real loop shows (cold caches between torch's work, the norm reads' and the scans'
    share, which are paced by the step time)."""
    import timeit

    import torch
    import torch.nn as nn

    from nndoctor.live.observer import Watcher

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    loss = loss.detach()
    watcher = Watcher(model, opt).start()
    probe = watcher.probe

    def one() -> None:
        probe._keep_inputs(model, (x,), {})
        probe._losses.append(loss.detach())
        probe._pre_step(opt, (), {})
        probe._post_step(opt, (), {})

    try:
        for _ in range(300):
            one()
        # CPU time of this thread, in short repeats: a repeat that another process preempted or
        # whose caches it flushed is slower, so the min is the steadiest figure
        times = sorted(t / steps * 1e6 for t in timeit.repeat(one, number=steps, repeat=repeats,
                                                               timer=time.thread_time))
    finally:
        watcher.stop()
    return {"min_us": times[0], "median_us": times[len(times) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--scripts", default=",".join(HEALTHY))
    parser.add_argument("--json", default=None)
    parser.add_argument("--micro", action="store_true", help="the 1,000-step micro-loop instead")
    parser.add_argument("--widths", default="64,256,1024", help="the micro-loop's hidden widths")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.micro:
        print(f"{'width':>6} {'bare us/step':>13} {'added us/step':>14} {'x':>7} "
              f"{'median step us':>15} {'median added':>13} {'block us':>9} {'block added':>12}")
        rows = []
        for width in (int(w) for w in args.widths.split(",")):
            row = micro(width, args.runs, args.every)
            rows.append(row)
            print(f"{width:6} {row['bare_us']:13.1f} {row['added_us']:14.1f} {row['ratio']:7.3f} "
                  f"{row['median_step_bare_us']:15.1f} {row['median_step_added_us']:13.1f} "
                  f"{row['block_bare_us']:9.1f} {row['block_added_us']:12.1f}", flush=True)
        hooks = hook_work()
        print(f"the watcher's own hook work, in isolation: {hooks['min_us']:.1f} us a step (min), "
              f"{hooks['median_us']:.1f} (median)")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump({"micro": rows, "hook_work": hooks}, fh, indent=2)
        return
    if args.child:
        print(json.dumps(child(args.child, args.runs, args.every)))
        return
    rows = []
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(f"{'script':16} {'bare s':>8} {'watched s':>10} {'wall x':>8} {'cpu x':>8} "
          f"{'floor x':>8} {'floor+norm x':>13}")
    for name in args.scripts.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", name, "--runs", str(args.runs),
                              "--every", str(args.every)], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{name:16} {row['bare_wall_s']:8.2f} {row['watched_wall_s']:10.2f} "
              f"{row['wall_ratio']:8.3f} {row['cpu_ratio']:8.3f} {row['floor_wall_ratio']:8.3f} "
              f"{row['floor_norm_wall_ratio']:13.3f}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
