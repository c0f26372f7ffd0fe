"""The real-bug benchmark: publicly reported training bugs, ported to PyTorch with their fixes.

Run from the repo root (nndoctor is imported from PYTHONPATH, so point it at the tree
to measure):

    PYTHONPATH=$PWD python bench/real_bugs.py [--cases a,b] [--seeds 0,1,2,3,4]
        [--out bench/REAL_BUGS.md] [--json results.json] [--timeout 600]

Each case is a module in bench/real_bugs/ with `buggy()` and `fixed()` (SPEC §1 dicts),
the source post in its docstring and `EXPECTED = [(code, where-or-None), ...]` for the
buggy program. For every case, variant and seed, a subprocess builds the program and runs
`nndoctor.engine.runner.run_checks` with every check, as `nndoctor check` does, and prints its
findings as JSON; a case that hangs is stopped at `--timeout` seconds.

Scores:
- recall: expected (code, where) pairs found in the buggy program's report / expected;
  an expected `where` of None matches any `where`;
- false alarms: fixed programs with any finding of severity warning or error (the fixed
  programs are verified healthy in plain PyTorch by each case's `verify_fixed()`), except a
  code the case lists in `TRUE_ON_FIXED = {code: why}`: a flaw the source's own fix keeps and
  that is shown true in plain PyTorch (`verify_true_on_fixed()`). Those are counted and listed
  apart, never dropped.

Seeds: `--seeds` is nndoctor's seed (its sampling, its probes). `--program-seed N` builds
every case with program seed N (its weights, data and loader order; default 0, the
programs as ported); `--program-seed run` uses each run's seed as its program seed too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

HERE = os.path.dirname(os.path.abspath(__file__))
CASES_DIR = os.path.join(HERE, "real_bugs")
ALARM_SEVERITIES = ("warning", "error")
PROGRAM_SEED_ENV = "NNDOCTOR_BENCH_PROGRAM_SEED"  # read by real_bugs/_common.py
DEFAULT_TIMEOUT_S = 600  # the slowest case takes ~1 min on a loaded 2-core machine


def case_names() -> list:
    return sorted(f[:-3] for f in os.listdir(CASES_DIR)
                  if f.endswith(".py") and not f.startswith("_"))


def load_case(name: str):
    """Import bench/real_bugs/NAME.py with its folder on sys.path (for `_common`)."""
    if CASES_DIR not in sys.path:
        sys.path.insert(0, CASES_DIR)
    spec = importlib.util.spec_from_file_location(f"real_bug_{name}", os.path.join(CASES_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source_of(module) -> tuple:
    """(title, url) from the docstring's `Source: "title" — url` line (the title may hold
    dashes and span lines)."""
    doc = " ".join((module.__doc__ or "").split())
    found = re.search(r'Source: "(.+?)" — (\S+)', doc)
    return (found.group(1), found.group(2)) if found else ("", "")


# --------------------------------------------------------------------------- one run (child)

def true_on_fixed(module) -> dict:
    """{code: why} of the findings the case declares true on its fixed program."""
    return dict(getattr(module, "TRUE_ON_FIXED", {}) or {})


def program_seed_of(option: str, seed: int) -> int:
    return seed if option == "run" else int(option)


def run_one(name: str, variant: str, seed: int) -> dict:
    """Build CASE's VARIANT and run every check on it; the findings as plain dicts."""
    from nndoctor import checks
    from nndoctor.engine.runner import run_checks
    from nndoctor.target import to_setup

    module = load_case(name)
    setup = to_setup(getattr(module, variant)(), label=f"{name}:{variant}")
    started = time.perf_counter()
    report = run_checks(setup, list(checks.CHECKS), {}, target=f"{name}:{variant}", device="cpu", seed=seed)
    return {
        "seconds": time.perf_counter() - started,
        "findings": [{"code": f.code, "severity": f.severity, "check": f.check, "where": f.where,
                      "message": f.message} for f in report.findings],
        "checks": {c.name: {"status": c.status, "reason": c.reason} for c in report.checks},
    }


def run_child(name: str, variant: str, seed: int, timeout: float, program_seed: int = 0) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, variant, str(seed)]
    env = dict(os.environ, **{PROGRAM_SEED_ENV: str(program_seed)})
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"crash": f"timed out after {timeout:g} s", "seconds": timeout}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"crash": f"exit {done.returncode}: " + " | ".join(tail),
                "seconds": time.perf_counter() - started}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- scoring

def matches(expected: tuple, finding: dict) -> bool:
    code, where = expected
    return finding["code"] == code and (where is None or finding["where"] == where)


def score_buggy(expected: list, result: dict) -> list:
    """For each expected pair, whether a finding matches it."""
    findings = result.get("findings", [])
    return [any(matches(e, f) for f in findings) for e in expected]


def alarms(result: dict, declared: dict = None) -> list:
    """Findings at warning or error, less the codes `declared` true (TRUE_ON_FIXED)."""
    return [f for f in result.get("findings", []) if f["severity"] in ALARM_SEVERITIES
            and f["code"] not in (declared or {})]


def declared_true(result: dict, declared: dict) -> list:
    """The warning/error findings whose code the case declares true on its fixed program."""
    return [f for f in result.get("findings", []) if f["severity"] in ALARM_SEVERITIES
            and f["code"] in (declared or {})]


def fmt_finding(f: dict) -> str:
    return f"`{f['code']}`" + (f" @ `{f['where']}`" if f["where"] else "")


def fmt_expected(e: tuple) -> str:
    return f"`{e[0]}`" + (f" @ `{e[1]}`" if e[1] else "")


def check_errors(result: dict) -> list:
    return [f"{n}: {c['reason']}" for n, c in result.get("checks", {}).items() if c["status"] == "error"]


# --------------------------------------------------------------------------- report

def render(rows: list, seeds: list, pythonpath: str, program_seed: str = "0") -> str:
    found = sum(sum(r["hits"][s].count(True) for s in seeds) for r in rows)
    total = sum(len(r["expected"]) * len(seeds) for r in rows)
    alarmed = [(r["name"], s) for r in rows for s in seeds
               if r["fixed"][s].get("crash") or alarms(r["fixed"][s], r.get("true_on_fixed"))]
    kept = [(r["name"], s, f) for r in rows for s in seeds
            for f in declared_true(r["fixed"][s], r.get("true_on_fixed"))]
    with_kept = len(set(alarmed) | {(n, s) for n, s, _ in kept})
    programs = ("each run's seed" if program_seed == "run" else program_seed)
    runs = len(rows) * len(seeds)
    pct = 100 * found / total if total else 0.0
    lines = [
        "# Real-bug benchmark",
        "",
        "Publicly reported training bugs, each ported to PyTorch with the fix its accepted answer",
        "or maintainer gave (`bench/real_bugs/`, one module per case; each fixed program is",
        "verified to learn in plain PyTorch by its `verify_fixed()`). `python bench/real_bugs.py`",
        "runs every check of `nndoctor check` on both versions.",
        "",
        f"- nndoctor from: `{pythonpath}`; seeds: {', '.join(map(str, seeds))}; program seed: {programs}; "
        f"{len(rows)} cases",
        f"- **recall {found}/{total} ({pct:.0f}%), false alarms on fixed programs {len(alarmed)}/{runs}**"
        + (f" ({with_kept}/{runs} counting the {len(kept)} declared-true warnings listed below)" if kept else ""),
        "",
        "Recall counts expected (code, where) pairs found in the buggy program's report (an",
        "expected `where` of – matches any); a false alarm is a fixed program with any finding",
        "at warning or error.",
        "",
        "| case | source | expected (buggy) | found on buggy | missed | fixed: warning/error findings | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for s in seeds:
            b, fx = r["buggy"][s], r["fixed"][s]
            missed = [fmt_expected(e) for e, hit in zip(r["expected"], r["hits"][s]) if not hit]
            got = b.get("crash") or ", ".join(f"{fmt_finding(f)} ({f['severity'][0]})" for f in b["findings"]) or "none"
            fixed_alarms = fx.get("crash") or ", ".join(
                [fmt_finding(f) for f in alarms(fx, r.get("true_on_fixed"))]
                + [f"{fmt_finding(f)} (declared true)" for f in declared_true(fx, r.get("true_on_fixed"))]) or "none"
            label = r["name"] + (f" (seed {s})" if len(seeds) > 1 else "")
            lines.append(f"| {label} | [{r['title']}]({r['url']}) | "
                         f"{', '.join(fmt_expected(e) for e in r['expected'])} | {got} | "
                         f"{', '.join(missed) or '–'} | {fixed_alarms} | "
                         f"{b.get('seconds', 0):.0f}+{fx.get('seconds', 0):.0f} |")
    lines += ["", "## Misses", ""]
    misses = [(r["name"], s, e, r["buggy"][s]) for r in rows for s in seeds
              for e, hit in zip(r["expected"], r["hits"][s]) if not hit]
    for name, s, e, b in misses:
        errors = check_errors(b)
        lines.append(f"- {name} (seed {s}): {fmt_expected(e)} not found"
                     + (f"; checks that errored: {'; '.join(errors)}" if errors else "")
                     + (f"; run crashed: {b['crash']}" if b.get("crash") else ""))
    if not misses:
        lines.append("- none")
    lines += ["", "## False alarms on fixed programs", ""]
    for name, s in alarmed:
        fx = next(r for r in rows if r["name"] == name)["fixed"][s]
        if fx.get("crash"):
            lines.append(f"- {name} (seed {s}): run crashed: {fx['crash']}")
        for f in alarms(fx, next(r for r in rows if r["name"] == name).get("true_on_fixed")):
            lines.append(f"- {name} (seed {s}): {fmt_finding(f)} ({f['severity']}, {f['check']}): {f['message']}")
    if not alarmed:
        lines.append("- none")
    lines += ["", "## Declared true on fixed programs (not counted as false alarms)", "",
              "A flaw the source's fix keeps, shown true in plain PyTorch by the case's",
              "`verify_true_on_fixed()`; the case's `TRUE_ON_FIXED` says why.", ""]
    for name, s, f in kept:
        why = next(r for r in rows if r["name"] == name)["true_on_fixed"][f["code"]]
        lines.append(f"- {name} (seed {s}): {fmt_finding(f)} ({f['severity']}): {f['message']} Why true: {why}")
    if not kept:
        lines.append("- none")
    lines += ["", "## Checks that ended in `error`", "",
              "A check whose run raised (the model's own exception, or nndoctor's): on a buggy program",
              "that may be the bug itself; on a fixed one it is a defect.", ""]
    errored = [(r["name"], v, s, e) for r in rows for s in seeds for v in ("buggy", "fixed")
               for e in check_errors(r[v][s])]
    for name, variant, s, error in errored:
        lines.append(f"- {name} {variant} (seed {s}): {error}")
    if not errored:
        lines.append("- none")
    lines.append("")
    return "\n".join(lines)


def merge(paths: list) -> tuple:
    """(rows, seeds, program-seed label) of several --json files: each case's runs by seed (a
    seed run twice: the later file wins)."""
    by_name: dict = {}
    seeds: list = []
    program_seeds: set = set()
    for path in paths:
        with open(path) as fh:
            for row in json.load(fh):
                kept = by_name.setdefault(row["name"], {**row, "buggy": {}, "fixed": {}, "hits": {},
                                                        "program_seeds": {}})
                kept["expected"] = [tuple(e) for e in row["expected"]]
                for key in ("buggy", "fixed", "hits", "program_seeds"):
                    kept[key].update(row.get(key, {}))
                for s in row["buggy"]:
                    if s not in seeds:
                        seeds.append(s)
                    program_seeds.add((s, row.get("program_seeds", {}).get(s, 0)))
    same = all(int(s) == int(p) for s, p in program_seeds)
    fixed = {int(p) for _, p in program_seeds}
    label = str(fixed.pop()) if len(fixed) == 1 else "run" if same else \
        ", ".join(f"{p} (seed {s})" for s, p in sorted(program_seeds))
    return list(by_name.values()), sorted(seeds, key=int), label


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--out", help="write the Markdown report here (e.g. bench/REAL_BUGS.md)")
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1: timings stay comparable)")
    parser.add_argument("--program-seed", default="0",
                        help="the cases' own seed (weights, data, loader order): an integer, or 'run' for "
                             "each run's --seeds value (default 0: the programs as ported)")
    parser.add_argument("--render", help="comma-separated --json files of earlier runs (one seed each, or "
                                         "more): merge them and write the report, running nothing")
    parser.add_argument("--child", nargs=3, metavar=("CASE", "VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        name, variant, seed = args.child
        print(json.dumps(run_one(name, variant, int(seed)), default=str))
        return 0

    if args.render:
        rows, seeds, programs = merge([p for p in args.render.split(",") if p])
        text = render(rows, seeds, os.environ.get("PYTHONPATH", "") or "(installed nndoctor)", programs)
        if args.out:
            with open(args.out, "w") as fh:
                fh.write(text)
        else:
            print(text)
        return 0

    names = case_names()
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in names]
        if unknown:
            parser.error(f"unknown case {unknown[0]!r} (known: {', '.join(names)})")
        names = wanted
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.program_seed != "run" and not args.program_seed.lstrip("-").isdigit():
        parser.error(f"--program-seed takes an integer or 'run', not {args.program_seed!r}")
    rows = []
    for name in names:
        module = load_case(name)
        title, url = source_of(module)
        rows.append({"name": name, "title": title, "url": url, "expected": [tuple(e) for e in module.EXPECTED],
                     "true_on_fixed": true_on_fixed(module), "buggy": {}, "fixed": {}, "hits": {},
                     "program_seeds": {}})
    runs = [(row, variant, s) for row in rows for s in seeds for variant in ("buggy", "fixed")]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_child, row["name"], variant, s, args.timeout,
                               program_seed_of(args.program_seed, s)): (row, variant, s)
                   for row, variant, s in runs}
        for future in as_completed(futures):
            row, variant, s = futures[future]
            result = row[variant][s] = future.result()
            row["program_seeds"][s] = program_seed_of(args.program_seed, s)
            if variant == "buggy":
                row["hits"][s] = score_buggy(row["expected"], result)
            summary = (f"found {row['hits'][s].count(True)}/{len(row['expected'])}" if variant == "buggy"
                       else f"{len(alarms(result, row['true_on_fixed']))} warning/error findings"
                       + (f" (+{len(declared_true(result, row['true_on_fixed']))} declared true)"
                          if declared_true(result, row["true_on_fixed"]) else ""))
            print(f"{row['name']} {variant} seed {s}: {summary}"
                  + (f" (crash: {result['crash']})" if result.get("crash") else ""), file=sys.stderr, flush=True)
    pythonpath = os.environ.get("PYTHONPATH", "") or "(installed nndoctor)"
    text = render(rows, seeds, pythonpath, args.program_seed)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    else:
        print(text)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
