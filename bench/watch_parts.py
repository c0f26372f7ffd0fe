"""Where a watched step's time goes: the micro-loop of watch_bench.py under each part alone.

    OMP_NUM_THREADS=1 python bench/watch_parts.py [--width 64] [--runs 7]

A 2-layer MLP (20 -> width -> 4, batch 64, SGD with momentum), 1,000 steps per loop, CPU
time a step, median over `--runs` loops per variant, the variants interleaved (each run in
the other order). Variants: bare; torch's global optimizer step pre/post hooks, no-op; the
`Tensor.backward` wrapper keeping the loss (cleared at each step); the root module's forward
pre-hook (with kwargs, no-op: what keeping the re-run's inputs costs in torch's slow call
path); those three together; the Watcher with no sampled step after the first
(`every` = 1e9: no scan, the paced norm reads and judges only); the Watcher at the default
period. Printed: µs a step and the µs over bare. Figures in bench/WATCH.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nndoctor.live.observer import Watcher  # noqa: E402 (after the sys.path insert)

VARIANTS = ("bare", "optimizer hooks", "backward wrapper", "root pre-hook", "all three",
            "watcher, no sampling", "watcher")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, args.width), nn.ReLU(), nn.Linear(args.width, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))

    def loop(steps: int) -> float:
        began = time.thread_time()
        for _ in range(steps):
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
        return (time.thread_time() - began) / steps * 1e6

    def attach(variant: str) -> list:
        """Install the variant; returns what undoes it."""
        undo: list = []
        if variant in ("optimizer hooks", "all three"):
            for handle in (register_optimizer_step_pre_hook(lambda o, a, k: None),
                           register_optimizer_step_post_hook(lambda o, a, k: None)):
                undo.append(handle.remove)
        if variant in ("backward wrapper", "all three"):
            original, kept = torch.Tensor.backward, []

            def backward(tensor, *a, **k):
                if tensor.numel() == 1:
                    kept.append(tensor.detach())
                return original(tensor, *a, **k)

            torch.Tensor.backward = backward  # type: ignore[method-assign]
            undo.append(lambda: setattr(torch.Tensor, "backward", original))
            undo.append(register_optimizer_step_post_hook(lambda o, a, k: kept.clear()).remove)
        if variant in ("root pre-hook", "all three"):
            undo.append(model.register_forward_pre_hook(lambda m, a, k: None, with_kwargs=True).remove)
        if variant.startswith("watcher"):
            watcher = Watcher(every=10 ** 9 if "no sampling" in variant else 50).start()
            undo.append(watcher.stop)
        return undo

    loop(300)
    times: dict = {v: [] for v in VARIANTS}
    for run in range(args.runs):
        for variant in (VARIANTS if run % 2 == 0 else VARIANTS[::-1]):
            undo = attach(variant)
            try:
                times[variant].append(loop(1000))
            finally:
                for step in reversed(undo):
                    step()
    bare = statistics.median(times["bare"])
    for variant in VARIANTS:
        us = statistics.median(times[variant])
        print(f"{variant:22} {us:8.1f} us a step  {us - bare:+7.1f}")


if __name__ == "__main__":
    main()
