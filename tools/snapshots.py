"""Golden outputs: every sample's report, and every output the README shows.

    python tools/snapshots.py                 # rewrite tests/snapshots/ and the README's outputs
    python tools/snapshots.py --check         # exit 1, with a diff, where an output drifted
    python tools/snapshots.py --only mlp,codes
    pytest --update-snapshots                 # the same rewrite, from the test suite

Two kinds of snapshot, both real runs:

- `tests/snapshots/samples/NAME.txt` and `NAME.json`: `check` on `sample_models/NAME.py`,
  the Rich report at 80 columns without colour, and the JSON without its timings;
- `tests/snapshots/readme/NAME.txt`: the console text of one README example (the commands,
  run in a shell as a user types them, and what they print). The README shows it in the
  ```console block under its marker `<!-- snapshot: NAME -->`, so the README's outputs are
  written from these files, never by hand (tests/test_snapshots.py checks they match).

Timings differ run to run: drift is judged with them masked (and the spacing they shift).
Float results differ between CPUs (torch's, MKL's and oneDNN's kernels are chosen by the
instruction set, and a 100-step training run turns a last-bit difference into a different
third digit): the snapshots are made, and compared, with those kernels pinned to AVX2
(`pin_cpu_kernels`, also called by tests/conftest.py), which every x86-64 CI machine has.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Optional

# The same float results on any x86-64 machine with AVX2, AVX-512 or not: torch's own CPU
# kernels (ATen's dispatch by capability), MKL's BLAS (its conditional numerical
# reproducibility) and oneDNN's convolutions, each held to its AVX2 code. Read when each
# library first runs a kernel, so set before any tensor op. A variable the user set wins.
CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin_cpu_kernels() -> None:
    """Called by `main` and by tests/conftest.py, before torch runs anything; the README's
    examples, run in a shell, inherit it."""
    for name, value in CPU_KERNELS.items():
        os.environ.setdefault(name, value)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
SNAPSHOTS = os.path.join(ROOT, "tests", "snapshots")
ELIDED = "[…]"
WIDTH = 80  # the README's and a default terminal's width


@dataclass(frozen=True)
class Example:
    """One README console example: what is typed, and which lines of its output are shown."""

    commands: tuple  # shell commands, shown after "$ "
    keep: Optional[tuple] = None  # (start, stop) slices of the whole text to keep, joined by […]
    setup: tuple = ()  # files written into the run's folder first: ((name, text), ...)
    lang: str = "console"
    show_commands: bool = True
    files: tuple = ()  # extra hidden commands run after (e.g. cat a report)
    drop: tuple = ()  # report sections (e.g. "size", "lr-find") left out, saying so


_CONFIG_TYPO = "target: sample_models/mlp.py\noverfit: {steps: 200, treshold: 0.05}\n"

# README examples by marker name, in the order they appear there.
EXAMPLES = {
    "check-mlp": Example(("nndoctor check sample_models/mlp.py",)),
    "check-dead-relu": Example(("nndoctor check sample_models/dead_relu_mlp.py",)),
    "check-log-relu": Example(("nndoctor check sample_models/log_relu_net.py",), drop=("size",)),
    "check-partial-optimizer": Example(("nndoctor check sample_models/partial_optimizer_mlp.py",),
                                       drop=("size", "lr-find")),
    "check-softmax-ce": Example(("nndoctor check sample_models/softmax_ce_mlp.py",), drop=("size", "lr-find")),
    "size-transformer": Example(("nndoctor size sample_models/transformer_encoder.py --depth 2",)),
    "size-budget": Example(("nndoctor size sample_models/mlp.py --max-params 2e5",)),
    "data-label-overflow": Example(("nndoctor data sample_models/label_overflow_mlp.py",)),
    "data-nan": Example(("nndoctor data sample_models/nan_data_mlp.py",)),
    "data-raw-pixels": Example(('nndoctor data sample_models/raw_pixels_cnn.py --fail-on warning; echo "exit $?"',)),
    "static-single-softmax": Example(("nndoctor check sample_models/single_softmax_net.py --only static",)),
    "static-list-layers": Example(("nndoctor check sample_models/list_layers_mlp.py --only static",)),
    "init-hot-logits": Example(("nndoctor init sample_models/hot_logits_mlp.py",)),
    "init-tiny": Example(("nndoctor init sample_models/tiny_init_mlp.py",)),
    "init-batch-mixing": Example(("nndoctor init sample_models/batch_mixing_cnn.py",)),
    "nan-sqrt": Example(("nndoctor nan sample_models/sqrt_backward_net.py",)),
    "nan-lr": Example(("nndoctor nan sample_models/nan_lr_mlp.py",)),
    "grads-sigmoid": Example(("nndoctor grads sample_models/deep_sigmoid_mlp.py",)),
    "grads-exploding": Example(("nndoctor grads sample_models/exploding_grad_mlp.py",)),
    "grads-unused": Example(("nndoctor grads sample_models/unused_layer_net.py",)),
    "dead-functional": Example(("nndoctor dead sample_models/functional_relu_net.py",)),
    "overfit-tiny-capacity": Example(("nndoctor overfit sample_models/tiny_capacity_mlp.py",)),
    "lr-find-mlp": Example(("nndoctor lr-find sample_models/mlp.py --plot lr.png",)),
    "lr-find-high": Example(("nndoctor lr-find sample_models/high_lr_mlp.py",), drop=("lr-find",)),
    "fit-memorising": Example(("nndoctor fit sample_models/memorising_mlp.py",)),
    "fit-tiny-capacity": Example(("nndoctor fit sample_models/tiny_capacity_mlp.py",)),
    "watch-clip": Example(("nndoctor watch sample_scripts/clip_before_unscale.py",)),
    "codes": Example(("nndoctor codes",), keep=((0, 9),)),
    "explain": Example(("nndoctor explain dead-neurons",)),
    "explain-typo": Example(("nndoctor explain dead-neuron",)),
    "check-shape-mismatch": Example(
        ("nndoctor check tests/fixtures/bad/nd_bad.py:shape_mismatch --skip lr-find",),
        keep=((0, 13), (-1, None))),
    "config-typo": Example(
        ("nndoctor check --config nndoctor.yaml      # TARGET from the file",
         "nndoctor overfit                            # ./nndoctor.yaml, e.g. overfit: {steps: 200, treshold: 0.05}"),
        setup=(("nndoctor.yaml", _CONFIG_TYPO),)),
    "json-dead-relu": Example(("nndoctor check sample_models/dead_relu_mlp.py --only size,dead --format json",)),
    "json-lr-find": Example(
        ("nndoctor lr-find sample_models/mlp.py --format json | jq -c '.lr_find | "
         "{suggested_lr, method, current_lr, points: (.lrs | length)}'",)),
    "junit-run": Example(("nndoctor check sample_models/dead_relu_mlp.py --format junit -o report.xml",)),
    "junit-xml": Example(("nndoctor check sample_models/dead_relu_mlp.py --format junit -o report.xml",),
                         show_commands=False, lang="xml", files=("cat report.xml",)),
    "github": Example(("nndoctor check sample_models/dead_relu_mlp.py --format github",)),
    "markdown": Example(("nndoctor check sample_models/dead_relu_mlp.py --format markdown",)),
    "sarif": Example(
        ("nndoctor check sample_models/label_overflow_mlp.py --only data --format sarif | jq '.runs[0].results[0] | "
         "{ruleId, level, message: .message.text, location: .locations[0].physicalLocation}'",)),
    "exit-2": Example((
        "nndoctor check models/missing.py",
        "nndoctor check tests/fixtures/bad/nd_syntax.py",
        "nndoctor check sample_models/mlp.py:make_model",
        "nndoctor check tests/fixtures/bad/nd_bad.py:factory_raises",
        "nndoctor check tests/fixtures/bad/nd_import_raises.py",
    )),
}


# --------------------------------------------------------------------------- running

def _environment(shim_dir: str) -> dict:
    env = dict(os.environ)
    env.update(COLUMNS=str(WIDTH), LINES="50", TERM="dumb", NO_COLOR="1", PYTHONHASHSEED="0",
               PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""),
               PATH=shim_dir + os.pathsep + env.get("PATH", ""))
    env.pop("FORCE_COLOR", None)
    env.pop("GITHUB_ACTIONS", None)
    return env


def run_example(example: Example) -> str:
    """The console text of one README example, as a user in the repository would see it."""
    with tempfile.TemporaryDirectory() as tmp:
        shim_dir = os.path.join(tmp, "bin")
        os.mkdir(shim_dir)
        shim = os.path.join(shim_dir, "nndoctor")
        with open(shim, "w") as fh:  # `nndoctor` as installed, but this checkout's code
            fh.write(f'#!/bin/sh\nexec "{sys.executable}" -m nndoctor "$@"\n')
        os.chmod(shim, 0o755)
        work = os.path.join(tmp, "work")
        os.mkdir(work)
        for name in ("sample_models", "sample_scripts", "tests", "examples", "docs"):
            os.symlink(os.path.join(ROOT, name), os.path.join(work, name))
        for name, text in example.setup:
            with open(os.path.join(work, name), "w") as fh:
                fh.write(text)
        env = _environment(shim_dir)
        lines: list = []
        for command in example.commands:
            out = _shell(command, work, env)
            if example.show_commands:
                lines.append(f"$ {command}")
                lines += out
        for command in example.files:
            lines += _shell(command, work, env)
    return _elide(_drop_sections(lines, example.drop), example.keep)


def _drop_sections(lines: list, names: tuple) -> list:
    """Leave out the Rich report's sections `names` (a title line up to the next blank line),
    with one line saying so where the first of them stood."""
    kept, dropped, marker_at, skipping = [], [], None, False
    for line in lines:
        if not skipping and line in names:
            skipping = True
            dropped.append(line)
            marker_at = len(kept) if marker_at is None else marker_at
        elif skipping:
            skipping = line != ""
        else:
            kept.append(line)
    if not dropped:
        return lines
    what = " and ".join(dropped) + (" sections" if len(dropped) > 1 else " section")
    return kept[:marker_at] + [f"[… {what} left out …]", ""] + kept[marker_at:]


def _shell(command: str, cwd: str, env: dict) -> list:
    done = subprocess.run(["bash", "-c", f"{{ {command}\n}} 2>&1"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    return [line.rstrip() for line in done.stdout.rstrip("\n").splitlines()]


def _elide(lines: list, keep: Optional[tuple]) -> str:
    if keep is None:
        return "\n".join(lines) + "\n"
    parts = []
    for start, stop in keep:
        parts.append("\n".join(lines[start:stop]))
    return f"\n{ELIDED}\n".join(parts) + "\n"


def run_sample(name: str) -> tuple:
    """(Rich text at 80 columns, JSON without timings) of `check` on a sample, in-process."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from rich.console import Console

    from nndoctor import checks
    from nndoctor.engine.runner import run_checks
    from nndoctor.render.rich import print_report
    from nndoctor.target import load_target

    target = f"sample_models/{name}.py"
    setup = load_target(os.path.join(ROOT, target))
    report = run_checks(setup, list(checks.CHECKS), {}, target=target, device="cpu", seed=0)
    buffer = io.StringIO()
    print_report(report, Console(file=buffer, width=WIDTH, no_color=True, color_system=None,
                                 force_terminal=False, legacy_windows=False))
    text = "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"
    return text, json.dumps(_untimed(report.to_dict()), indent=2, sort_keys=True) + "\n"


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def sample_names() -> list:
    return sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "sample_models"))
                  if f.endswith(".py") and not f.startswith("_"))


# --------------------------------------------------------------------------- comparing

_TIME = re.compile(r"\b\d+(?:\.\d+)?s\b|\"(?:time|seconds)\": ?\"?[\d.]+\"?|time=\"[\d.]+\"|\b\d+(?:\.\d+)? s\b")


# watch's note that a rectifier had too few observations for a verdict: whether it appears
# depends on how many activation scans ran, which the scans' pacing by their cost (2% of the
# run's time, live.SCAN_BUDGET) sets from the machine's speed, as it does the timings
_SCAN_NOTE = re.compile(r"note: dead-neurons: not enough observations.*?(?:\n\n|\Z)", re.S)


def masked(text: str) -> str:
    """The text with its timings (and the column spacing they shift) masked, and watch's
    timing-dependent observations note dropped."""
    text = _SCAN_NOTE.sub("", text)
    text = _TIME.sub("T", text)
    text = "\n".join(re.sub(r"[ ─]+", " ", line).rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text)  # the dropped note's blank line, either side of it


# JSON snapshots hold unrounded floats. The same kernels still differ in the last bits between
# the snapshot tool's process and the suite's (another test ran before, in another thread
# layout): 0.13338494 against 0.13338493 after 5 epochs, a mean of gradients that cancel to
# 2.6e-10 against 2.8e-10, and a race loss 0.90111 against 0.90108 after the race amplified
# it (mlp.json, measured in CI). Floats are equal within REL_TOLERANCE of the larger, or
# ABS_TOLERANCE (float32's round-off on sums of O(1) terms): a change of logic moves them far
# more, and what a user reads, the Rich text with its 4 digits, is compared exactly.
REL_TOLERANCE = 1e-3
ABS_TOLERANCE = 1e-7


def _close(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= max(ABS_TOLERANCE, REL_TOLERANCE * max(abs(a), abs(b)))
    if isinstance(a, str) and isinstance(b, str):
        return masked(a) == masked(b)
    return a == b


# The kernels pinned to AVX2 gave the same floats on the Intel machines the snapshots were made
# and checked on, but not on an AMD one (measured, 2026-12-03, an AMD EPYC against the
# Intel-made snapshots: 25 of 86 differ (21 samples, 4 README examples), every one
# in numbers and plot points only: a gradient norm 0.033 against 0.034, a range test stopping
# at 97 steps against 96; not one code, finding or line of text). On a CPU of another vendor
# than the snapshots' (CPU_FILE) they are compared `loosely`: every number and plot point
# masked, the words, codes and findings exact.
CPU_FILE = os.path.join(SNAPSHOTS, "cpu.txt")
_PLOT_LINE = re.compile(r"^.*[\u2800-\u28ff·●▲].*$", re.M)  # a braille curve or a scatter row
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?x?", re.I)


def cpu_vendor() -> Optional[str]:
    """The CPU's vendor (/proc/cpuinfo's vendor_id: GenuineIntel, AuthenticAMD), or None."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def other_cpu() -> Optional[str]:
    """This CPU's vendor where it is not the one the snapshots were made on, else None."""
    made_on = read(CPU_FILE).strip() if os.path.exists(CPU_FILE) else None
    vendor = cpu_vendor()
    return vendor if made_on and vendor and vendor != made_on else None


def loosely(text: str) -> str:
    """`masked`, with every number and plot row masked and the line breaks they shift."""
    text = _NUMBER.sub("#", _PLOT_LINE.sub("", masked(text)))
    return " ".join(text.split())


def _shape(value):
    """A JSON value with its numbers masked: the keys, strings and flags that say what was found."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        shaped = [_shape(v) for v in value]
        return "#" if all(v == "#" for v in shaped) else shaped  # a curve may be a step longer
    if isinstance(value, bool):
        return value
    if value is None or isinstance(value, (int, float)):
        return "#"
    return loosely(value) if isinstance(value, str) else value


def drift(stored: str, fresh: str, label: str, loose: bool = False) -> str:
    """'' if equal up to timings (and, in JSON, float round-off; `loose`: every number), else a
    unified diff."""
    if masked(stored) == masked(fresh):
        return ""
    if label.endswith(".json"):
        try:
            a, b = json.loads(stored), json.loads(fresh)
            if _close(a, b) or (loose and _shape(a) == _shape(b)):
                return ""
        except ValueError:
            pass
    elif loose and loosely(stored) == loosely(fresh):
        return ""
    return "".join(difflib.unified_diff(stored.splitlines(True), fresh.splitlines(True),
                                        f"{label} (stored)", f"{label} (now)"))


# --------------------------------------------------------------------------- files

def readme_path(name: str) -> str:
    return os.path.join(SNAPSHOTS, "readme", f"{name}.txt")


def sample_paths(name: str) -> tuple:
    base = os.path.join(SNAPSHOTS, "samples", name)
    return base + ".txt", base + ".json"


def read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


_MARKER = re.compile(r"^<!-- snapshot: ([\w-]+) -->\n```(\w+)\n(.*?)^```\n", re.M | re.S)


def readme_blocks(readme: str) -> dict:
    """marker name -> (language, text) of the README's snapshot blocks."""
    return {m.group(1): (m.group(2), m.group(3)) for m in _MARKER.finditer(readme)}


def write_readme() -> list:
    """Put every README snapshot into its block; returns the markers with no snapshot."""
    readme = read(README)
    missing = []

    def replace(match):
        name = match.group(1)
        if name not in EXAMPLES or not os.path.exists(readme_path(name)):
            missing.append(name)
            return match.group(0)
        return f"<!-- snapshot: {name} -->\n```{EXAMPLES[name].lang}\n{read(readme_path(name))}```\n"

    write(README, _MARKER.sub(replace, readme))
    return missing


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    pin_cpu_kernels()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on drift")
    parser.add_argument("--only", help="comma-separated sample or README example names")
    args = parser.parse_args(argv)
    chosen = set(args.only.split(",")) if args.only else None
    other = other_cpu() if args.check else None
    loose = bool(other)
    if other:
        print(f"snapshots made on {read(CPU_FILE).strip()}, this CPU is {other}: numbers and "
              "plots compared loosely", file=sys.stderr)
    drifted = []
    for name in sample_names():
        if chosen and name not in chosen:
            continue
        text, data = run_sample(name)
        for path, fresh in zip(sample_paths(name), (text, data)):
            diff = drift(read(path), fresh, path, loose) if os.path.exists(path) else f"{path}: no snapshot\n"
            if args.check:
                drifted.append(diff) if diff else None
            else:
                write(path, fresh)
        print(f"sample {name}", file=sys.stderr)
    for name, example in EXAMPLES.items():
        if chosen and name not in chosen:
            continue
        fresh = run_example(example)
        path = readme_path(name)
        if args.check:
            diff = drift(read(path), fresh, path, loose) if os.path.exists(path) else f"{path}: no snapshot\n"
            drifted.append(diff) if diff else None
        else:
            write(path, fresh)
        print(f"readme {name}", file=sys.stderr)
    if args.check:
        sys.stdout.write("".join(drifted))
        return 1 if drifted else 0
    if cpu_vendor() and not chosen:
        write(CPU_FILE, cpu_vendor() + "\n")
    missing = write_readme()
    if missing:
        print(f"README markers with no snapshot: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
