"""Peak memory of a diagnosis on a ~100M-parameter model, in copies of its weights.

A bare training loop holds the weights, their gradients and the optimizer's state
(Adam: two moments), 4 copies in all. nndoctor adds its one snapshot of the weights to
restore them (issue 6), and torch-lr-finder's cache of the state during the LR test,
which lr-find's `cache: auto` puts on disk for a model this size.

Each measurement runs in its own process (peak RSS is a per-process high-water mark):

    python bench/memory.py            # bare loop, then nndoctor with each check set
    python bench/memory.py --width 1024 --depth 8   # a quicker, smaller model

Prints, for each run, the peak RSS and (peak - bare peak) / size of the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(width: int, depth: int):
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, width, generator=g), torch.randint(0, 10, (64,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    return model, loader, torch.optim.Adam(model.parameters(), lr=1e-4)


def child(args) -> dict:
    """One measurement, in this (child) process."""
    import torch

    torch.set_num_threads(1)
    model, loader, optimizer = build(args.width, args.depth)
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    if args.run == "bare":
        criterion = torch.nn.CrossEntropyLoss()
        for _, (x, y) in zip(range(args.steps), loader):
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
        summary = "ok"
    else:
        from nndoctor.engine.runner import run_checks
        from nndoctor.target import Setup

        checks, _, cache = args.run.partition(":")
        settings = {"overfit": {"steps": args.steps},
                    "lr-find": {"num_iter": args.steps, "cache": cache or "auto"}}
        report = run_checks(Setup(model=model, train_loader=loader, optimizer=optimizer),
                            checks.split(","), settings, device="cpu")
        summary = ", ".join(f"{c.name}:{c.status}" for c in report.checks)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"run": args.run, "peak_mb": peak_mb, "weights_mb": weights_mb, "summary": summary}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--depth", type=int, default=24)  # 24 x 2048^2 + ... = 100.7M parameters
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(child(args)))
        return
    runs = ["bare", "overfit,grads,nan", "data,init,dead", "size", "lr-find:memory", "lr-find:auto",
            "size,data,init,nan,grads,dead,overfit,lr-find"]
    bare = None
    print(f"{'run':52s} {'peak RSS':>10s} {'extra':>14s}")
    for run in runs:
        out = subprocess.run([sys.executable, __file__, "--width", str(args.width), "--depth",
                              str(args.depth), "--steps", str(args.steps), "--run", run],
                             cwd=ROOT, capture_output=True, text=True)
        if out.returncode:
            print(f"{run}: failed\n{out.stderr[-2000:]}")
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        bare = bare or result
        extra = (result["peak_mb"] - bare["peak_mb"]) / result["weights_mb"]
        print(f"{run:52s} {result['peak_mb']:8.0f} MB {extra:+8.2f} copies   {result['summary']}",
              flush=True)
    print(f"weights: {bare['weights_mb']:.0f} MB; 'extra' = (peak - bare peak) / weights")


if __name__ == "__main__":
    main()
