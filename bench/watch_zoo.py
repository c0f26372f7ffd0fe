"""Does `watch` stay quiet on healthy real architectures? (issue 16)

Run from the repo root:

    python bench/watch_zoo.py [--models bert,gpt2] [--seeds 0,1] [--steps 300] [--bugs all]
        [--out bench/WATCH_ZOO.md]

The zoo's entries (`bench/zoo_models.py`: real architectures from their libraries' configs,
random init, learnable synthetic data, the optimizer their recipes use), each trained by a
plain PyTorch loop over its train loader under `nndoctor.watch(model, optimizer)` at the
default period, its validation loss logged after every epoch (`doc.log(val_loss=...)`, which
feeds `overfitting`), for `--steps` optimizer steps: a finding on these healthy runs is a
false alarm unless the run shows the fault it names. With `--bugs`, the same loops with a
bug put in (BUGS), and whether a code that names it was found. One subprocess per model and
seed; the entries whose package is not installed are listed as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from zoo import _cell, kept_notes, loss_of  # noqa: E402 (bench/ on the path first)

TIMEOUT = 900  # seconds a run may take (2 shared cores)


# Bugs put into the healthy loop (`--bugs`), each as a user writes it, and the codes that name it.
BUGS = {
    # the validation function's model.eval() never undone: every epoch after the first trains
    # with dropout and BatchNorm in eval mode (a model with neither has nothing to find)
    "eval_left_on": ("eval-mode-in-training",),
    # StepLR(step_size=20, gamma=0.1), meant per epoch, stepped per batch: the LR is 1e-5 of its
    # start by step 100
    "lr_per_batch": ("lr-collapsed",),
    # every group's LR x1000 from step 150 (a warm-up's peak mistyped): the run diverges
    "lr_blowup": ("non-finite", "loss-spike", "exploding-gradient"),
    # one batch at step 150 whose every label is -100 (an SFT batch whose answers were truncated
    # away): cross-entropy's mean over no targets is 0/0 = NaN (pytorch#70348, #116349;
    # OpenRLHF#583, cosmos-rl#155 guard it)
    "labels_all_ignored": ("non-finite",),
    # one NaN in one float input of the batch at step 150 (a corrupt audio file or image); only
    # models with float inputs
    "nan_input": ("non-finite",),
}
BLOWUP_STEP, BLOWUP_FACTOR = 150, 1000.0
NAN_STEP = 150  # the corrupt batch's step (0-based: the 151st), for the two data bugs
DATA_BUGS = ("labels_all_ignored", "nan_input")


def corrupt(batch, bug: str):
    """The batch with `bug` put in (a copy), or None when it has nothing the bug can touch."""
    import torch

    if isinstance(batch, dict):
        inputs, labels = {k: v for k, v in batch.items() if k != "labels"}, batch.get("labels")
    else:
        inputs, labels = batch
    if bug == "labels_all_ignored":
        if labels is None or labels.is_floating_point():
            return None
        labels = torch.full_like(labels, -100)
    else:
        floats = [k for k, v in (inputs.items() if isinstance(inputs, dict) else [(0, inputs)])
                  if isinstance(v, torch.Tensor) and v.is_floating_point()]
        if not floats:
            return None
        inputs = dict(inputs) if isinstance(inputs, dict) else {0: inputs}
        bad = inputs[floats[0]].clone()
        bad.view(-1)[bad.numel() // 2] = float("nan")
        inputs[floats[0]] = bad
        inputs = inputs if isinstance(batch, dict) else inputs[0]
    return {**inputs, "labels": labels} if isinstance(batch, dict) else (inputs, labels)


def child(name: str, seed: int, steps: int, bug: str = "", backend: str = "") -> dict:
    sys.path.insert(0, ROOT)
    import torch

    torch.set_num_threads(1)
    import zoo_models

    import nndoctor
    from nndoctor.probes.live import mode_dependent

    target = zoo_models.build(name, seed)
    model, optimizer = target["model"], target["optimizer"]
    if backend:  # `model = torch.compile(model)`, as a user writes it: the loop and the watch get that
        model = target["model"] = torch.compile(model, backend=backend)

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            losses = [float(loss_of(target, b)) for b in target["val_loader"]]
        if bug != "eval_left_on":
            model.train()
        return sum(losses) / len(losses)

    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.1) \
        if bug == "lr_per_batch" else None

    started = time.perf_counter()
    model.train()
    taken = 0
    applies = bug != "eval_left_on" or any(mode_dependent(m) for m in model.modules())  # eval mode changes
    with nndoctor.watch(model, optimizer) as doc:
        while taken < steps:
            for batch in target["train_loader"]:
                if bug in DATA_BUGS and taken == NAN_STEP:
                    bad = corrupt(batch, bug)
                    applies, batch = bad is not None, batch if bad is None else bad
                optimizer.zero_grad(set_to_none=True)
                loss_of(target, batch).backward()
                optimizer.step()
                taken += 1
                if scheduler is not None:
                    scheduler.step()
                if bug == "lr_blowup" and taken == BLOWUP_STEP:
                    for group in optimizer.param_groups:
                        group["lr"] *= BLOWUP_FACTOR
                if taken >= steps:
                    break
            doc.log(val_loss=val_loss())
    report = doc.report
    losses = [v for v in doc.history.losses if v == v]
    return {"model": name, "seed": seed, "bug": bug, "applies": applies, "steps": taken,
            "seconds": time.perf_counter() - started,
            "findings": [{"code": f.code, "where": f.where, "message": f.message, "step": f.evidence.get("step"),
                          "kind": f.evidence.get("kind")} for f in report.findings],
            "notes": list(report.notes), "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "val_losses": [v for _, v in doc.history.val_losses]}


def spawn(name: str, seed: int, steps: int, bug: str = "", backend: str = "") -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        done = subprocess.run([sys.executable, __file__, "--child", name, "--seeds", str(seed),
                               "--steps", str(steps), "--bugs", bug, "--compile", backend],
                              capture_output=True, text=True, env=env,
                              timeout=TIMEOUT, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"model": name, "seed": seed, "error": f"over {TIMEOUT} s"}
    if done.returncode != 0:
        return {"model": name, "seed": seed, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def available(family: str) -> bool:
    if family == "torch":
        return True
    try:
        __import__(family)
        return True
    except Exception:  # a package that fails to import (torchvision beside another torch) is absent too
        return False


NOTES_MARKER = "<!-- written by hand: kept when bench/watch_zoo.py rewrites the table above -->"


def markdown(results: list, skipped: list, command: str) -> str:
    out = ["# watch on the zoo: healthy real architectures, trained by a plain loop", "",
           f"Generated by `{command}`. Each run: the entry's own optimizer, its train loader looped "
           "for the steps given, under `nndoctor.watch(model, optimizer)` at the default period (50), "
           "the validation loss logged after each epoch. The runs are healthy: a finding is a false "
           "alarm unless the run shows the fault it names (the notes below say which).", "",
           "| model | seed | steps | loss first → last | val first → last | findings | notes | s |",
           "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            out.append(f"| {r['model']} | {r['seed']} | | | | ERROR {_cell(str(r['error']))} | | |")
            continue
        findings = "; ".join(f"**{f['code']}**{_where(f)}: {f['message']}" for f in r["findings"]) or "none"
        notes = "; ".join(r["notes"]) or ""
        val = r["val_losses"]
        out.append(f"| {r['model']} | {r['seed']} | {r['steps']} | {r['first_loss']:.3g} → {r['last_loss']:.3g} | "
                   + (f"{val[0]:.3g} → {val[-1]:.3g} ({len(val)})" if val else "") + f" | {_cell(findings)} | "
                   f"{_cell(notes)} | {r['seconds']:.0f} |")
    runs = [r for r in results if "error" not in r]
    flagged = sum(1 for r in runs if r["findings"])
    out += ["", f"Runs with a finding: {flagged} of {len(runs)}." + (
        f" Skipped (package not installed): {', '.join(skipped)}." if skipped else ""), ""]
    return "\n".join(out)


def _names(finding: dict, bug: str) -> bool:
    """The finding names the bug: its code, and for a corrupt batch its step and its kind."""
    if finding["code"] not in BUGS[bug]:
        return False
    if bug not in DATA_BUGS:
        return True
    return finding["step"] == NAN_STEP and (finding["kind"] == "input") == (bug == "nan_input")


def _where(finding: dict) -> str:
    return f" `{finding['where']}`" if finding["where"] else ""


def bug_table(results: list) -> str:
    """The runs with a bug put in: what was found, and whether a code that names it was."""
    if not results:
        return ""
    out = ["## The same loops with a bug put in", "",
           "Each bug as a user writes it (`BUGS` in the script): `eval_left_on`, the validation "
           "function's `model.eval()` never undone (only models with dropout modules, an RNN's "
           "dropout between layers included, or BatchNorm have something to find); `lr_per_batch`, a per-epoch `StepLR(step_size=20, gamma=0.1)` stepped "
           f"per batch; `lr_blowup`, every LR x{BLOWUP_FACTOR:g} from step {BLOWUP_STEP}; "
           f"`labels_all_ignored`, one batch (step {NAN_STEP + 1}) whose every label is -100; `nan_input`, "
           f"one NaN in one float input of the batch at step {NAN_STEP + 1} (only models with float "
           "inputs). A corrupt batch is found when `non-finite` names its step and whether the inputs "
           "held the NaN.", "",
           "| model | seed | bug | found | findings |", "|---|---|---|---|---|"]
    found = expected = 0
    for r in results:
        if "error" in r:
            out.append(f"| {r['model']} | {r['seed']} | {r.get('bug', '')} | ERROR | {_cell(str(r['error']))} |")
            expected += 1
            continue
        applies = r["applies"]
        hit = any(_names(f, r["bug"]) for f in r["findings"])
        expected += applies
        found += applies and hit
        verdict = ("yes" if hit else "**MISSED**") if applies else ("n/a" + (", yet found" if hit else ""))
        cells = "; ".join(f"**{f['code']}**{_where(f)}: {f['message']}" for f in r["findings"]) or "none"
        out.append(f"| {r['model']} | {r['seed']} | {r['bug']} | {verdict} | {_cell(cells)} |")
    out += ["", f"Found: {found} of {expected} runs where the bug applies.", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated zoo entries (default: all installed)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default=os.path.join(HERE, "WATCH_ZOO.md"))
    parser.add_argument("--bugs", default="",
                        help=f"comma-separated bugs to put into the loop as well ({', '.join(BUGS)}), or all")
    parser.add_argument("--compile", default="", metavar="BACKEND",
                        help="train torch.compile(model, backend=BACKEND) instead (eager: dynamo's tracing "
                             "without code generation, inductor: torch's default)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, int(args.seeds), args.steps, args.bugs, args.compile)))
        return 0
    bugs = list(BUGS) if args.bugs == "all" else [b for b in args.bugs.split(",") if b]
    import zoo_models

    names = args.models.split(",") if args.models else list(zoo_models.ENTRIES)
    skipped = [n for n in names if not available(zoo_models.ENTRIES[n].family)]
    results: list = []
    bugged: list = []
    for name in names:
        if name in skipped:
            continue
        for seed in map(int, args.seeds.split(",")):
            result = spawn(name, seed, args.steps, "", args.compile)
            results.append(result)
            codes = [f["code"] for f in result.get("findings", [])]
            print(f"{name} seed {seed}: {result.get('error') or codes or 'quiet'}", file=sys.stderr, flush=True)
            for bug in bugs:
                result = spawn(name, seed, args.steps, bug, args.compile)
                bugged.append(result)
                codes = [f["code"] for f in result.get("findings", [])]
                print(f"{name} seed {seed} {bug}: {result.get('error') or codes or 'quiet'}", file=sys.stderr, flush=True)
    command = "python bench/watch_zoo.py" + "".join(
        f" --{k} {v}" for k, v in (("seeds", args.seeds), ("steps", args.steps), ("bugs", args.bugs))
        if v not in ("0", 300, "")) + (f" --compile {args.compile}" if args.compile else "")
    notes = kept_notes(args.out, NOTES_MARKER)
    with open(args.out, "w") as f:
        f.write(markdown(results, skipped, command) + bug_table(bugged) + notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
