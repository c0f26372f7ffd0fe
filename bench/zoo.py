"""The zoo: nndoctor on real, healthy architectures (issue 13 (b)).

Usage:

    PYTHONPATH=/path/to/nndoctor-worktree /work/zoo-venv/bin/python bench/zoo.py \
        [--models bert,gpt2] [--seeds 0,1,2,3,4] [--checks overfit,dead] [--out bench/ZOO.md] \
        [--json results.json] [--timeout 600] [--verify [--no-check]] [--list] [--render a.json,b.json]

Each entry of `bench/zoo_models.py` builds a real architecture from its library's config
(torchvision, timm, Hugging Face transformers, torch.nn) with random init, on learnable
synthetic data, with its recommended optimizer. For every model and seed a subprocess
builds the target and runs `nndoctor.engine.runner.run_checks` (what `nndoctor check` runs) on it;
a crash or a hang (past --timeout) is reported for that model and the rest go on. nndoctor
is imported from PYTHONPATH, so any worktree can run this file. Every model here is
healthy: any finding at warning or error is a false alarm, unless the "verified" section
of ZOO.md proves it true in plain PyTorch.

`--verify` also trains each model in plain PyTorch (no nndoctor): its loss on one
repeated batch (memorisation) and its validation loss before and after a few epochs
over the train loader (generalisation).

`--render a.json,b.json --out bench/ZOO.md` writes the table from saved `--json` files
(e.g. a check run and a --verify run made apart). Models whose library is not
installed are skipped with a note.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SEVERE = ("warning", "error")
DEFAULT_TIMEOUT = 600  # CPU seconds per model and seed; the slowest entry's full check takes ~2-4 min of CPU
# ...and a hang (no CPU used) is stopped after this many times as long in wall time: measured load
# averages of 10-20 on the 2-core machine the helpers share
WALL_PER_CPU = 6
# plain-PyTorch verification (--verify)
MEMORISE_STEPS = 500  # steps on one repeated batch, the most nndoctor's issue-13 evidence needed (GRU: 500)
MEMORISED = 0.1  # "memorises the batch": the first step whose loss is below this (nndoctor's overfit threshold)
# once memorised, stop after this many steps (the table shows the loss at 100 and 200)
VERIFY_MIN_STEPS = 200
# epochs over the train loader (BERT's masked-token val loss
# had not moved after 8 epochs: 15% of the tokens carry a label, each permutation entry is seen ~4
# times an epoch)
VERIFY_EPOCHS = 15
VERIFY_CPU_SECONDS = 45  # ...or fewer epochs, when they take longer (ResNet-18: ~0.35 s a step)


def child_env(threads: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               PYTHONWARNINGS="ignore")
    env.setdefault("NNDOCTOR_NUM_THREADS", str(threads))
    env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


# --------------------------------------------------------------------------- child: one model, one seed

def _setup_child(threads: int):
    sys.path.insert(0, HERE)
    import torch
    torch.set_num_threads(threads)
    import zoo_models
    return torch, zoo_models


def run_one(name: str, seed: int, checks: list, threads: int) -> dict:
    """nndoctor's checks on one entry: what the parent puts in the table."""
    _torch, zoo_models = _setup_child(threads)
    from nndoctor import checks as registry
    from nndoctor.engine.runner import run_checks
    from nndoctor.target import to_setup

    built = time.perf_counter()
    target = zoo_models.build(name, seed)
    params = sum(p.numel() for p in target["model"].parameters())
    build_seconds = time.perf_counter() - built
    names = checks or list(registry.CHECKS)
    cpu = time.process_time()
    report = run_checks(to_setup(target, label=name), names, target=f"zoo:{name}", device="cpu", seed=seed)
    return {
        "model": name, "seed": seed, "params": params, "build_seconds": build_seconds,
        "seconds": report.seconds, "cpu_seconds": time.process_time() - cpu,
        "findings": [f.to_dict() for f in report.findings],
        "checks": {c.name: {"status": c.status, "reason": c.reason, "seconds": c.seconds} for c in report.checks},
        "notes": report.notes,
        # what the vanishing-gradient comparison read (its layers and ratio), to audit its choice
        "vanishing": {k: v for c in report.checks if c.name == "grads"
                      for k, v in (c.metrics or {}).items() if k.startswith("vanishing")},
    }


def loss_of(target: dict, batch):
    """The training loss the SPEC §1 way: the model's own .loss for dict batches, else
    criterion(output, target) (a segmentation model's dict output: its "out")."""
    model = target["model"]
    if isinstance(batch, dict):
        return model(**batch).loss
    inputs, y = batch
    output = model(*inputs) if isinstance(inputs, (list, tuple)) else model(inputs)
    if isinstance(output, dict):
        output = output["out"]
    return target["criterion"](output, y)


def _rows(batch, keep: int, other):
    """`other`'s samples everywhere but row `keep` of `batch` (same structure: dict or (inputs, y))."""
    def mix(a, b):
        if isinstance(a, dict):
            return {k: mix(a[k], b[k]) for k in a}
        if isinstance(a, (list, tuple)):
            return type(a)(mix(x, y) for x, y in zip(a, b))
        mixed = b.clone()
        mixed[keep] = a[keep]
        return mixed
    return mix(batch, other)


def batch_leak(target: dict) -> float:
    """In eval mode, the largest change of sample i's output (i = first, middle, last) when
    every other sample of its batch is replaced: 0 when the samples do not mix."""
    import torch

    from nndoctor.engine.session import primary_output, split_batch

    model = target["model"]
    first, second = iter(target["val_loader"]), iter(target["val_loader"])
    batch, other = next(first), next(x for i, x in enumerate(second) if i == 1)
    size = split_batch(batch).batch_size

    def outputs(b):
        split = split_batch(b)
        out = model(*split.args, **split.kwargs)
        return primary_output(out["out"] if isinstance(out, dict) and "out" in out else out)

    model.eval()
    worst = 0.0
    with torch.no_grad():
        reference = outputs(batch)
        for i in sorted({0, size // 2, size - 1}):
            changed = outputs(_rows(batch, i, other))
            worst = max(worst, (changed[i] - reference[i]).abs().max().item())
    model.train()
    return worst


def accuracy(target: dict):
    """Eval-mode val accuracy of a classifier (one class per sample, or per pixel: a tuple
    batch or a dict batch whose `labels` are one per sample); None for token-level tasks."""
    import torch

    from nndoctor.engine.session import primary_output, split_batch

    model, hits, total = target["model"], 0, 0
    model.eval()
    with torch.no_grad():
        for raw in target["val_loader"]:
            split = split_batch(raw)
            labels = split.target if split.target is not None else split.kwargs.get("labels")
            if labels is None or (split.target is None and labels.dim() != 1):
                return None
            out = model(*split.args, **split.kwargs)
            out = primary_output(out["out"] if isinstance(out, dict) and "out" in out else out)
            if out.dim() >= 4:  # (N, C, H, W) against (N, H, W)
                out = out.movedim(1, -1)
            if out.shape[:-1] != labels.shape:
                return None
            hits += (out.argmax(-1) == labels).sum().item()
            total += labels.numel()
    model.train()
    return hits / total


def verify_one(name: str, seed: int, threads: int) -> dict:
    """Plain PyTorch: memorise one batch, then train over the loader and watch the val loss."""
    torch, zoo_models = _setup_child(threads)
    import copy

    target = zoo_models.build(name, seed)
    model, optimizer = target["model"], target["optimizer"]
    initial = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())

    def eval_loss(loader="val_loader"):
        model.eval()
        with torch.no_grad():
            losses = [loss_of(target, b).item() for b in target[loader]]
        model.train()
        return sum(losses) / len(losses)

    val_accuracy = []

    def eval_loss_and_accuracy():
        loss, hits = eval_loss(), accuracy(target)
        if hits is not None:
            val_accuracy.append(hits)
        return loss

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(target, batch)
        loss.backward()
        optimizer.step()
        return loss.item()

    started = time.perf_counter()
    leak = batch_leak(target)
    model.train()
    batch = next(iter(target["train_loader"]))
    curve, memorised = [], None
    while len(curve) < MEMORISE_STEPS and not (memorised and len(curve) >= VERIFY_MIN_STEPS):
        curve.append(step(batch))
        if memorised is None and curve[-1] < MEMORISED:
            memorised = len(curve)
    memorise = {"first": curve[0], "at_100": curve[99], "at_200": curve[199], "last": curve[-1],
                "steps": len(curve), "memorised_at": memorised}

    model.load_state_dict(initial[0])
    optimizer.load_state_dict(initial[1])
    before = eval_loss_and_accuracy()
    val_curve, train_first, train_last = [before], None, None
    cpu = time.process_time()
    while len(val_curve) <= VERIFY_EPOCHS and time.process_time() - cpu < VERIFY_CPU_SECONDS:
        losses = [step(b) for b in target["train_loader"]]
        train_first = losses[0] if train_first is None else train_first
        train_last = sum(losses) / len(losses)
        val_curve.append(eval_loss_and_accuracy())
    after = val_curve[-1]
    train_eval = eval_loss("train_loader")  # the same mode as the val loss: the real train/val gap
    return {"model": name, "seed": seed, "batch_leak": leak, "memorise": memorise, "val_before": before, "val_after": after,
            "train_first": train_first, "train_last_epoch": train_last, "train_eval_after": train_eval, "epochs": len(val_curve) - 1,
            "val_curve": val_curve, "val_accuracy": val_accuracy,
            "seconds": time.perf_counter() - started}


# --------------------------------------------------------------------------- parent

def _cpu_limit(seconds: float):
    """The child's CPU-time limit (SIGXCPU past it): on a shared machine a wall-clock limit
    would time out a healthy model because of other people's work."""
    def limit():
        resource.setrlimit(resource.RLIMIT_CPU, (int(seconds), int(seconds) + 5))
    return limit


def spawn(mode: str, name: str, seed: int, checks: list, threads: int, timeout: float) -> dict:
    command = [sys.executable, os.path.abspath(__file__), f"--_{mode}", name, "--seeds", str(seed),
               "--threads", str(threads)]
    if checks:
        command += ["--checks", ",".join(checks)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout * WALL_PER_CPU,
                               env=child_env(threads), preexec_fn=_cpu_limit(timeout))
    except subprocess.TimeoutExpired:
        return {"model": name, "seed": seed, "failure": f"hung: no result after {timeout * WALL_PER_CPU:g} s"}
    wall = time.perf_counter() - started
    if done.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return {"model": name, "seed": seed, "failure": f"timed out: more than {timeout:g} s of CPU time",
                "wall": wall}
    lines = [line for line in done.stdout.splitlines() if line.startswith("ZOO-RESULT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"model": name, "seed": seed, "failure": f"exit {done.returncode}: {tail[:300]}", "wall": wall}
    result = json.loads(lines[-1][len("ZOO-RESULT "):])
    result["wall"] = wall
    return result


def severe(result: dict) -> list:
    return [f for f in result.get("findings", []) if f["severity"] in SEVERE]


def check_errors(result: dict) -> list:
    return [(name, c["reason"]) for name, c in result.get("checks", {}).items() if c["status"] == "error"]


def is_clean(result: dict) -> bool:
    return "failure" not in result and not severe(result) and not check_errors(result)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _short(message: str, limit: int = 160) -> str:
    return message if len(message) <= limit else message[:limit - 1] + "…"


def _val_path(v: dict) -> str:
    """before → lowest (its epoch) → after; before → after when the lowest is the last."""
    curve = v.get("val_curve") or [v["val_before"], v["val_after"]]
    low = min(range(len(curve)), key=curve.__getitem__)
    if low in (0, len(curve) - 1):
        return f"{curve[0]:.3f} → {curve[-1]:.3f}"
    return f"{curve[0]:.3f} → {curve[low]:.3f} (epoch {low}) → {curve[-1]:.3f}"


def _accuracy_path(v: dict) -> str:
    acc = v.get("val_accuracy") or []
    if not acc:
        return "–"
    picks = [acc[0], acc[min(5, len(acc) - 1)], acc[-1]]
    return " → ".join(f"{a:.0%}" for a in picks)


def merged_rows(results: list) -> list:
    """A model and seed run again (a later file) replaces its earlier row, in the earlier row's
    place. A rerun of some checks only (`--checks lr-find`, after a change to that check)
    replaces just those checks' results and findings in the earlier full row."""
    rows: dict = {}
    for r in results:
        key = (r["model"], r["seed"])
        earlier = rows.get(key)
        if earlier is None or "failure" in r or "failure" in earlier or \
                set(earlier.get("checks", {})) <= set(r.get("checks", {})):
            rows[key] = r
            continue
        rerun = set(r["checks"])
        merged = dict(earlier)
        merged["checks"] = {**earlier["checks"], **r["checks"]}
        merged["findings"] = [f for f in earlier["findings"] if f.get("check") not in rerun] + r["findings"]
        merged["reruns"] = earlier.get("reruns", []) + [sorted(rerun)]
        if "vanishing" in r and "grads" in rerun:
            merged["vanishing"] = r["vanishing"]
        rows[key] = merged
    return list(rows.values())


def markdown(results: list, verified: list, entries: dict, skipped: list, command: str) -> str:
    lines = ["# The zoo: nndoctor on real healthy architectures", "",
             (f"Made by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
              "Every model is healthy, so every finding at warning or error below is a false alarm "
              "unless the verification section proves it true. Entries: `bench/zoo_models.py`."), ""]
    clean = sum(is_clean(r) for r in results)
    lines += [(f"**{clean} of {len(results)} clean** (model × seed runs with no finding at warning/error "
               "and no check that errored)."), ""]
    lines += [("The seconds are the wall time of `run_checks` (its CPU time in brackets: the machine is shared, "
               "so the CPU time is what one core alone would take)."), "",
              "| model | seed | params | seconds | findings at warning/error (code, where: message) |",
              "|---|---|---|---|---|"]
    for r in results:
        if "failure" in r:
            cells = f"**run failed**: {r['failure']}"
            params = seconds = "–"
        else:
            items = [f"`{f['code']}` ({f['severity']}) at `{f['where']}`: {_short(f['message'])}" for f in severe(r)]
            items += [f"check `{name}` errored: {_short(reason or '')}" for name, reason in check_errors(r)]
            cells = "<br>".join(items) or "clean"
            params = f"{r['params'] / 1e6:.2f} M"
            seconds = f"{r['seconds']:.0f} ({r['cpu_seconds']:.0f})" if "cpu_seconds" in r else f"{r['seconds']:.0f}"
        lines.append(f"| {r['model']} | {r['seed']} | {params} | {seconds} | {_cell(cells)} |")
    if skipped:
        lines += ["", "Skipped (library not installed): " + ", ".join(skipped) + "."]
    if verified:
        lines += ["", "## Verified healthy in plain PyTorch", "",
                  (f"Each model's own loop, no nndoctor: {MEMORISE_STEPS} steps on one repeated training batch "
                   f"(\"memorises by step N\": the first step with loss < {MEMORISED}; a run stops at step "
                   f"{VERIFY_MIN_STEPS} or later once memorised), then, from the same "
                   "initial weights, some epochs over the train loader: the validation loss before → after, and "
                   "the training set's loss after, in eval mode as the validation loss is (the real train/val gap) "
                   "and as the last epoch's train-mode average. Batch leak: in eval mode, the largest change of "
                   "the first, middle and last sample's output when every other sample of its validation batch is "
                   "replaced (0: the samples do not mix; what `batch-dependency` claims they do)."),
                  "", ("| model | seed | batch leak | batch loss: start → step 100 → 200 → last (step) | memorises by step | "
                       "val loss before → lowest → after (epochs) | val accuracy: start → epoch 5 → last | train loss after: eval mode (train mode, last epoch) |"),
                  "|---|---|---|---|---|---|---|---|"]
        for v in verified:
            if "failure" in v:
                lines.append(f"| {v['model']} | {v['seed']} | run failed: {_cell(v['failure'])} | | | | | |")
                continue
            m = v["memorise"]
            leak = f"{v['batch_leak']:.1e}" if "batch_leak" in v else "–"
            lines.append(f"| {v['model']} | {v['seed']} | {leak} | {m['first']:.3f} → {m['at_100']:.3f} → {m['at_200']:.3f}"
                         f" → {m['last']:.4f} ({m['steps']}) | {m['memorised_at'] or 'not within ' + str(MEMORISE_STEPS)} | "
                         f"{_val_path(v)} ({v['epochs']}) | {_accuracy_path(v)} | "
                         f"{v.get('train_eval_after', float('nan')):.3f} ({v['train_last_epoch']:.3f}) |")
    lines += ["", "## Entries", "", "| model | library | config, data, optimizer |", "|---|---|---|"]
    for name, e in entries.items():
        lines.append(f"| {name} | {e.family} | {_cell(e.note)} |")
    return "\n".join(lines) + "\n"


NOTES_MARKER = "<!-- written by hand: kept when bench/zoo.py rewrites the tables above -->"


def kept_notes(path: str, marker: str = NOTES_MARKER) -> str:
    """The hand-written part of an existing table file (from `marker` on), or ""."""
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        text = f.read()
    at = text.find(marker)
    return "\n" + text[at:] if at >= 0 else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="nndoctor on the zoo of real healthy architectures")
    parser.add_argument("--models", default="", help="comma-separated entry names (default: all)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2,3,4")
    parser.add_argument("--checks", default="", help="comma-separated nndoctor checks (default: all, as `check`)")
    parser.add_argument("--out", default=None, help="write the Markdown table here (e.g. bench/ZOO.md)")
    parser.add_argument("--json", default=None, help="write every result as JSON here")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="CPU seconds per model and seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per subprocess")
    parser.add_argument("--verify", action="store_true", help="also train each model in plain PyTorch")
    parser.add_argument("--no-check", action="store_true", help="with --verify: skip nndoctor")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    parser.add_argument("--render", default="", help="comma-separated --json files: write --out from them (a later file's run of a model and seed wins), run nothing")
    parser.add_argument("--_check", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_verify", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]

    if args._check or args._verify:  # the child
        result = run_one(args._check, seeds[0], checks, args.threads) if args._check \
            else verify_one(args._verify, seeds[0], args.threads)
        print("ZOO-RESULT " + json.dumps(result, default=str), flush=True)
        return 0

    sys.path.insert(0, HERE)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from zoo_models import ENTRIES
    names = [m.strip() for m in args.models.split(",") if m.strip()] or list(ENTRIES)
    unknown = [n for n in names if n not in ENTRIES]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; the entries are {', '.join(ENTRIES)}")
    if args.list:
        for name, e in ENTRIES.items():
            print(f"{name:20s} {e.family:13s} {e.note}")
        return 0
    skipped = [n for n in names if importlib.util.find_spec(ENTRIES[n].family) is None]
    for name in skipped:
        print(f"skip {name}: {ENTRIES[name].family} is not installed", file=sys.stderr)
    runnable = [n for n in names if n not in skipped]

    results, verified = [], []
    if args.render:
        for path in args.render.split(","):
            with open(path) as f:
                saved = json.load(f)
            results += saved["results"]
            verified += saved["verified"]
            skipped += [n for n in saved["skipped"] if n not in skipped]
        results = merged_rows(results)
        verified = list({(v["model"], v["seed"]): v for v in verified}.values())
        names = list(dict.fromkeys(r["model"] for r in results + verified))
        runnable = []
    command = "bench/zoo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    entries = {n: ENTRIES[n] for n in names}

    def save():  # after every model, so a long run's results so far can be read (and survive a kill)
        if args.out:
            text = markdown(results, verified, entries, skipped, command.strip()) + kept_notes(args.out)
            with open(args.out, "w") as f:
                f.write(text)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"results": results, "verified": verified, "skipped": skipped}, f, indent=1, default=str)

    for name in runnable:
        for seed in seeds:
            if not args.no_check:
                r = spawn("check", name, seed, checks, args.threads, args.timeout)
                results.append(r)
                summary = r.get("failure") or (", ".join(f"{f['code']}@{f['where']}" for f in severe(r))
                                               + "".join(f" {n} errored" for n, _ in check_errors(r)) or "clean")
                took = r.get("seconds", r.get("wall", 0.0)) or 0.0
                print(f"{name} seed {seed}: {took:.0f} s, {summary}", flush=True)
            if args.verify:
                v = spawn("verify", name, seed, [], args.threads, args.timeout)
                verified.append(v)
                m = v.get("memorise", {})
                print(f"{name} seed {seed} verify: {v.get('failure') or m}", flush=True)
                if "failure" not in v:
                    print(f"  val {v['val_before']:.3f} -> {v['val_after']:.3f}", flush=True)
            save()

    if results:
        clean = sum(is_clean(r) for r in results)
        print(f"{clean} of {len(results)} clean")
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
