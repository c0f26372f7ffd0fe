"""How good is lr-find's suggested LR? (issue 15)

Run from the repo root:

    python bench/lr_bench.py [--tasks sgd_mlp,adam_mlp] [--seeds 3] [--out bench/LR_BENCH.md]

Five small tasks of our own (synthetic, learnable data; CPU-sized), one per kind of model
and optimizer users reach for: an MLP with plain SGD, an MLP with Adam, a CNN with
BatchNorm and SGD with momentum, an LSTM with Adam, a small Transformer encoder with AdamW.
Per task and seed:

- the *grid*: the task trained for `STEPS` optimizer steps at each LR of a log grid (half a
  decade apart), from the same seeded init on the same seeded batches; its score is the loss
  on the whole training set after training (eval mode; 10% of the labels are noise, so the
  loss has a floor as on real data, and a ratio of two losses near 0 is not all noise). The
  race, like the range test, judges training progress: a held-out loss would also judge
  regularisation, which no LR rule sees (measured: with a held-out score every rule and the
  race pick LRs 2-10x above the held-out best on the Adam tasks, which overfit there). The grid-best LR has the lowest score,
  averaged over the seeds;
- *nndoctor*: `lr-find` (the range test and the race, `runner.run_checks` as `nndoctor
  lr-find` runs it, at that seed) on the task as a user hands it over, with the user's LR
  of the task (its optimizer's usual default); each method's suggestion (race, valley,
  steepest, min/10) is trained as the grid's LRs are and scored the same way.

The table gives, per task, the grid-best LR and loss and, per method, the loss at its
suggestion (mean of the seeds) as a multiple of the grid best. Also the race's cost: its
steps and seconds against the range test's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nndoctor.engine.runner import run_checks  # noqa: E402 (after the sys.path insert)
from nndoctor.target import Setup  # noqa: E402

STEPS = 200  # the fixed training budget: ~12 epochs of 512 samples in batches of 32
LABEL_NOISE = 0.1  # of the labels, train and held-out alike
GRID = [10 ** (e / 2) for e in range(-10, 1)]  # 1e-5 .. 1, half a decade apart
SAMPLES, BATCH = 512, 32
METHODS = ("race", "valley", "steepest", "min/10")
GOAL = 1.10  # issue 15: nndoctor's suggestion within 1.10x the grid best


# --------------------------------------------------------------------------- tasks

def _noisy(y, classes, g):
    """LABEL_NOISE of the labels replaced by random classes: the loss has a floor, as on real data."""
    flip = torch.rand(len(y), generator=g) < LABEL_NOISE
    return torch.where(flip, torch.randint(0, classes, y.shape, generator=g), y)


def _teacher(seed, shape, classes):
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(2 * SAMPLES, *shape, generator=g)
    w = torch.randn(int(torch.tensor(shape).prod()), classes, generator=g)
    return x, _noisy((x.reshape(2 * SAMPLES, -1) @ w).argmax(dim=1), classes, g)


def _batches(x, y, seed):
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    return [(x[order[i:i + BATCH]], y[order[i:i + BATCH]]) for i in range(0, len(x), BATCH)]


def mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        def block(cin, cout):
            return nn.Sequential(
                    nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))
        self.features = nn.Sequential(block(3, 16), block(16, 32))
        self.head = nn.Linear(32 * 4 * 4, 4)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 32, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


class TinyTransformer(nn.Module):
    def __init__(self, vocab=16, length=12, d=32):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.randn(length, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, 4)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens) + self.pos).mean(dim=1))


def _sequences(seed):
    """LSTM: 12 steps of 8 features; the label is the teacher's class of their sum over time."""
    g = torch.Generator().manual_seed(2000 + seed)
    x = torch.randn(2 * SAMPLES, 12, 8, generator=g)
    y = (x.sum(dim=1) @ torch.randn(8, 4, generator=g)).argmax(dim=1)
    return x, _noisy(y, 4, g)


def _tokens(seed):
    """Transformer: 12 tokens of 16; the label is which of tokens 0-3 occurs most often."""
    g = torch.Generator().manual_seed(3000 + seed)
    x = torch.randint(0, 16, (2 * SAMPLES, 12), generator=g)
    counts = torch.stack([(x == k).sum(dim=1) for k in range(4)], dim=1).float()
    y = (counts + 0.01 * torch.arange(4)).argmax(dim=1)
    return x, _noisy(y, 4, g)


# name: (build model, data, optimizer class and fixed kwargs, the user's LR)
TASKS = {
    "sgd_mlp": (mlp, lambda s: _teacher(s, (20,), 4), (torch.optim.SGD, {}), 1e-2),
    "adam_mlp": (mlp, lambda s: _teacher(s + 50, (20,), 4), (torch.optim.Adam, {}), 1e-3),
    "sgd_momentum_bn_cnn": (lambda s: torch.manual_seed(s) and CNN(), lambda s: _teacher(s, (3, 16, 16), 4),
                            (torch.optim.SGD, {"momentum": 0.9}), 1e-2),
    "adam_lstm": (lambda s: torch.manual_seed(s) and LSTMNet(), _sequences, (torch.optim.Adam, {}), 1e-3),
    "adamw_transformer": (lambda s: torch.manual_seed(s) and TinyTransformer(), _tokens,
                          (torch.optim.AdamW, {"weight_decay": 0.01}), 1e-3),
}


def make(task, seed, lr):
    """(model, optimizer, training batches, held-out (x, y)): the first SAMPLES samples train."""
    build, data, (opt_class, kwargs), _ = TASKS[task]
    model = build(seed)
    x, y = data(seed)
    train = _batches(x[:SAMPLES], y[:SAMPLES], seed)
    return model, opt_class(model.parameters(), lr=lr, **kwargs), train, (x[SAMPLES:], y[SAMPLES:])


def train_score(task, seed, lr) -> float:
    """Training-set loss (eval mode) after STEPS steps at `lr`; inf if it diverged."""
    model, optimizer, batches, _ = make(task, seed, lr)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    criterion = nn.CrossEntropyLoss()
    torch.manual_seed(seed)
    model.train()
    for step in range(STEPS):
        bx, by = batches[step % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(bx), by)
        if not torch.isfinite(loss):
            return math.inf
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = float(criterion(model(x), y))
    return final if math.isfinite(final) else math.inf


RACE_SETTINGS: dict = {}  # lr-find settings for the race (--race-steps); {}: its defaults


def suggestions(task, seed) -> dict:
    """lr-find on the task as a user hands it over (its own LR), at `seed`."""
    user_lr = TASKS[task][3]
    model, optimizer, batches, _ = make(task, seed, user_lr)
    started = time.perf_counter()
    report = run_checks(Setup(model=model, train_loader=batches, criterion=nn.CrossEntropyLoss(),
                              optimizer=optimizer), ["lr-find"], {"lr-find": dict(RACE_SETTINGS)}, device="cpu", seed=seed)
    seconds = time.perf_counter() - started
    section = report.sections["lr_find"]
    print(f"  seed {seed}: " + " ".join(f"{c['lr']:.2g}:{c['loss'] if c['loss'] is None else round(c['loss'], 3)}"
                                        f"/{c['steps']}" for c in section["candidates"]), file=sys.stderr)
    return {"suggestions": section["suggestions"], "race_steps": section["race_steps"],
            "range_steps": section["range_steps"], "seconds": seconds,
            "findings": [f.code for f in report.findings]}


def range_test_seconds(task, seed) -> float:
    """The range test alone (race_steps 0) on the same task, for the race's cost in seconds."""
    model, optimizer, batches, _ = make(task, seed, TASKS[task][3])
    started = time.perf_counter()
    run_checks(Setup(model=model, train_loader=batches, criterion=nn.CrossEntropyLoss(), optimizer=optimizer),
               ["lr-find"], {"lr-find": {"race_steps": 0, "method": "valley"}}, device="cpu", seed=seed)
    return time.perf_counter() - started


def grid_scores(task, seeds, cache=None) -> dict:
    """{lr: [score per seed]} over GRID; with `cache` (a JSON path), scores already computed
    are read from it and new ones added (the grid does not depend on nndoctor's code)."""
    stored = {}
    if cache and os.path.exists(cache):
        with open(cache) as f:
            stored = json.load(f)
    grid = {}
    for lr in GRID:
        grid[lr] = []
        for s in seeds:
            key = f"{task}/{s}/{lr:.6g}/{STEPS}"
            if key not in stored:
                stored[key] = train_score(task, s, lr)
            grid[lr].append(stored[key])
    if cache:
        with open(cache, "w") as f:
            json.dump(stored, f)
    return grid


def bench_task(task, seeds, log, cache=None) -> dict:
    grid = grid_scores(task, seeds, cache)
    mean = {lr: sum(v) / len(v) for lr, v in grid.items()}
    best_lr = min(mean, key=mean.get)
    per_method = {m: {"lrs": [], "losses": []} for m in METHODS}
    costs, findings = [], set()
    for s in seeds:
        found = suggestions(task, s)
        findings.update(found["findings"])
        range_seconds = range_test_seconds(task, s)
        costs.append((found["race_steps"], found["range_steps"], found["seconds"] - range_seconds, range_seconds))
        for m in METHODS:
            lr = found["suggestions"][m]
            per_method[m]["lrs"].append(lr)
            per_method[m]["losses"].append(train_score(task, s, lr) if lr else math.inf)
    user = [train_score(task, s, TASKS[task][3]) for s in seeds]
    row = {"task": task, "best_lr": best_lr, "best": mean[best_lr], "grid": mean,
           "user_lr": TASKS[task][3], "user": sum(user) / len(user), "findings": sorted(findings),
           "methods": {m: {"lrs": v["lrs"], "loss": sum(v["losses"]) / len(v["losses"])}
                       for m, v in per_method.items()},
           "race_steps": sum(c[0] for c in costs) / len(costs), "range_steps": sum(c[1] for c in costs) / len(costs),
           "race_seconds": sum(c[2] for c in costs) / len(costs),
           "range_seconds": sum(c[3] for c in costs) / len(costs)}
    log(f"{task}: grid " + " ".join(f"{lr:.0e}:{v:.3f}" for lr, v in mean.items()))
    log(f"{task}: grid best {best_lr:.2g} -> {mean[best_lr]:.4f}; " + ", ".join(
        f"{m} {row['methods'][m]['loss'] / mean[best_lr]:.2f}x" for m in METHODS))
    return row


def _lrs(lrs):
    return "/".join(f"{lr:.1e}" if lr else "none" for lr in lrs)


def markdown(rows, seeds) -> str:
    out = ["# lr-find: the loss at each method's suggestion against a grid search", "",
           f"Generated by `python bench/lr_bench.py` (seeds {', '.join(map(str, seeds))}; {STEPS} steps of "
           f"batch {BATCH} per training run; grid {GRID[0]:.0e} .. {GRID[-1]:.0e}, half a decade apart). "
           "Loss: the training-set loss (eval mode, 10% label noise) after the budget, averaged over the seeds; ×: that loss "
           "over the grid best's. Each method's LR is suggested per seed (listed in that order)." + (
               f" The race's budget: {RACE_SETTINGS['race_steps']} steps (`--race-steps`; default: the range "
               "test's own)." if "race_steps" in RACE_SETTINGS else ""), "",
           "| task | grid-best LR | grid-best loss | race | valley | steepest | min/10 | user's LR |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for m in METHODS:
            loss = r["methods"][m]["loss"]
            ratio = loss / r["best"] if math.isfinite(loss) else math.inf
            cells.append(f"{loss:.4f} ({ratio:.2f}×) at {_lrs(r['methods'][m]['lrs'])}")
        out.append(f"| {r['task']} | {r['best_lr']:.1e} | {r['best']:.4f} | " + " | ".join(cells)
                   + f" | {r['user']:.4f} ({r['user'] / r['best']:.2f}×) at {r['user_lr']:.0e} |")
    out += ["", "Goal (issue 15): race ≤ 1.10× the grid best and ≤ the best classic rule's, on every task.", ""]
    for r in rows:
        race = r["methods"]["race"]["loss"]
        classic = min(r["methods"][m]["loss"] for m in METHODS[1:])
        ok = race <= GOAL * r["best"] and race <= classic * (1 + 1e-9)
        out.append(f"- {r['task']}: race {race / r['best']:.2f}× the grid best, best classic rule "
                   f"{classic / r['best']:.2f}×: {'met' if ok else 'NOT met'}; findings on the user's LR: "
                   f"{', '.join(r['findings']) or 'none'}.")
    out += ["", "## The race's cost", "",
            "| task | range test steps | race steps | race / range (steps) | range test s | race s | race / range (s) |",
            "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['task']} | {r['range_steps']:.0f} | {r['race_steps']:.0f} | "
                   f"{r['race_steps'] / r['range_steps']:.2f} | {r['range_seconds']:.2f} | "
                   f"{r['race_seconds']:.2f} | {r['race_seconds'] / r['range_seconds']:.2f} |")
    out += ["", "Steps: optimizer steps, each on one batch (the race's are of the same size as the range "
            "test's). Race steps are mean over the seeds and include the confirmation steps "
            "(`lr_find.confirm`: the user's LR and the winner trained on, doubling their steps, up to "
            "2.5x the race's budget), spent only where the user's LR looked clearly worse (a verdict "
            "was checked); without them the race is at most the range test's num_iter. Seconds: wall "
            "time on the benchmark machine (2 shared cores, loaded by other jobs: noisy), the race's as "
            "`lr-find` minus the same call with `race_steps: 0`.", ""]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "LR_BENCH.md"))
    parser.add_argument("--grid-cache", default=None,
                        help="a JSON file keeping the grid's scores between runs (they do not depend on nndoctor)")
    parser.add_argument("--race-steps", type=int, default=None,
                        help="the race's budget in steps (lr-find's race_steps; default: the range test's own)")
    args = parser.parse_args(argv)
    if args.race_steps is not None:
        RACE_SETTINGS["race_steps"] = args.race_steps
    torch.set_num_threads(1)  # 2 shared cores: one run at a time, one thread
    seeds = list(range(args.seeds))
    def log(msg):
        return print(msg, file=sys.stderr, flush=True)
    rows = [bench_task(t, seeds, log, args.grid_cache) for t in args.tasks.split(",")]
    text = markdown(rows, seeds)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
