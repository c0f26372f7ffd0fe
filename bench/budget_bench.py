"""`check --budget` against wall time (issue 18): per model and budget, the wall time, which
checks ran in full, were cut or skipped, and the findings against the unbudgeted run.

    nice -n 5 python bench/budget_bench.py [--budgets 30,60,300] [--models mlp,cnn,resnet50,bert]
                                           [--unbudgeted mlp,cnn]

Each run is `python -m nndoctor check bench/budget_models.py:build_<model> --budget B --format json`
in a fresh process; results go to bench/budget_runs/<model>_<budget>.json and a Markdown table
is printed. Start-up = the wall time outside run_checks (import torch, load the target) plus
the calibration, which the budget's clock starts after (issue 18)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUNS = os.path.join(HERE, "budget_runs")
GOAL = 1.1  # wall <= 1.1 x budget + start-up
SEVERE = ("error", "warning")


def run(model: str, budget, timeout: float) -> dict:
    target = os.path.join(HERE, "budget_models.py") + f":build_{model}"
    cmd = [sys.executable, "-m", "nndoctor", "check", target, "--format", "json", "--fail-on", "never"]
    if budget is not None:
        cmd += ["--budget", str(budget)]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    wall = time.perf_counter() - started
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"model": model, "budget": budget, "wall": wall, "error": proc.stderr[-2000:]}
    section = report.get("budget") or {}
    calib = (section.get("calibration") or {}).get("seconds", 0.0)
    # outside the budget's clock: import torch, load the target, set up the session, calibrate,
    # render and exit (older rows, without used_seconds: only import, load and calibration)
    used = section.get("used_seconds")
    startup = wall - used if used is not None else wall - report["seconds"] + calib
    out = {"model": model, "budget": budget, "wall": round(wall, 1), "startup": round(startup, 1),
           "used": used, "calibration_seconds": calib,
           "checks_seconds": report["seconds"], "load_before": round(load, 2),
           "load_after": round(os.getloadavg()[0], 2),
           "within": budget is None or wall <= GOAL * budget + startup,
           "checks": {c["name"]: [c["status"], c["reason"]] for c in report["checks"]},
           "findings": sorted({(f["code"], f["severity"]) for f in report["findings"] if f["severity"] in SEVERE}),
           "plan": report.get("plan"), "line": (report.get("budget") or {}).get("line"),
           "calibration": (report.get("budget") or {}).get("calibration")}
    with open(os.path.join(RUNS, f"{model}_{budget or 'none'}.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    return out


def summarize(r: dict, base: Optional[dict]) -> str:
    if "error" in r:
        return f"| {r['model']} | {r['budget']} | {r['wall']:.0f} | – | – | – | run failed: {r['error'][-200:]!r} |"
    plan = r.get("plan") or {}
    full, cut, skipped = [], [], []
    for name, (status, _reason) in r["checks"].items():
        entry = plan.get(name) or {}
        planned, whole = entry.get("planned") or {}, entry.get("full") or {}
        is_cut = planned and whole and 0 < list(planned.values())[0] < list(whole.values())[0]
        rows = entry.get("rows") or {}
        on = f" on {rows['planned']}/{rows['full']} rows" if rows else ""  # the shared run's sub-batch
        said = f" ({status})" if status in ("skipped", "fail", "warning") else ""
        if status == "skipped" and not is_cut and not (on and entry.get("done")):
            skipped.append(name)
        elif is_cut:
            done = list((entry.get("done") or planned).values())[0]
            cut.append(f"{name} {done}/{list(whole.values())[0]}{on}{said}")
        elif on:
            cut.append(f"{name}{on}{said}")
        else:
            full.append(name)
    found = ", ".join(c for c, _ in r["findings"]) or "none"
    if base is None:
        versus = "(no unbudgeted run)"
    else:
        lost = sorted({c for c, _ in base["findings"]} - {c for c, _ in r["findings"]})
        extra = sorted({c for c, _ in r["findings"]} - {c for c, _ in base["findings"]})
        versus = "same" if not lost and not extra else f"missing {lost or '-'}; extra {extra or '-'}"
    budget = r["budget"] if r["budget"] is not None else "none"
    ok = "yes" if r["within"] else "**no**"
    used = f"{r['used']:.0f}" if r.get("used") is not None else "–"
    return (f"| {r['model']} | {budget} | {r['wall']:.0f} | {used} | {r['startup']:.0f} | {ok} | "
            f"{len(full)}: {', '.join(full) or '-'} | {', '.join(cut) or '-'} | {', '.join(skipped) or '-'} | "
            f"{found} | {versus} | {r['load_before']:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,cnn,resnet50,bert")
    ap.add_argument("--budgets", default="30,60,300")
    ap.add_argument("--unbudgeted", default="mlp,cnn")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--from-runs", action="store_true", help="print the table of bench/budget_runs/*.json, run nothing")
    args = ap.parse_args()
    os.makedirs(RUNS, exist_ok=True)
    rows, bases = [], {}
    if args.from_runs:
        for model in args.models.split(","):
            for budget in ["none"] + [str(float(b)) for b in args.budgets.split(",") if b]:
                path = os.path.join(RUNS, f"{model}_{budget}.json")
                if os.path.exists(path):
                    with open(path) as fh:
                        rows.append(json.load(fh))
                    if budget == "none":
                        bases[model] = rows[-1]
    for model in [] if args.from_runs else args.models.split(","):
        saved = os.path.join(RUNS, f"{model}_none.json")
        if model not in args.unbudgeted.split(",") and os.path.exists(saved):
            with open(saved) as fh:  # an earlier unbudgeted run (no budget code runs without --budget)
                bases[model] = json.load(fh)
        if model in args.unbudgeted.split(","):
            bases[model] = run(model, None, args.timeout)
            rows.append(bases[model])
            print(json.dumps(bases[model])[:300], file=sys.stderr, flush=True)
        for seconds in [float(b) for b in args.budgets.split(",") if b]:
            r = run(model, seconds, args.timeout)
            rows.append(r)
            print(json.dumps(r)[:300], file=sys.stderr, flush=True)
    print("| model | budget s | wall s | on the budget's clock s | start-up s | ≤ 1.1×budget + start-up | full | cut (done/full) | skipped "
          "| findings (warning+) | vs unbudgeted | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(summarize(r, bases.get(r["model"]) if r["budget"] is not None else None))


if __name__ == "__main__":
    main()
