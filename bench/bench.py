"""What `nndoctor check` costs against the training steps it needs (issue 5).

Run from the repo root:

    python bench/bench.py [--runs 4] [--samples xor,mlp] [--with-lr-find] [--json out.json]

For each healthy sample model, one *timing* subprocess per run

1. imports torch, loads the target (as the CLI does) and warms torch up with a few
   steps of a second copy of the model, so neither side below pays torch's first-call
   costs (nndoctor still pays its own lazy imports: torchinfo, torch-lr-finder);
2. runs nndoctor's checks (`runner.run_checks`, what `nndoctor check` runs) while
   counting, per check, the model's forward passes (a pre-hook on the root module),
   with and without autograd, the backward passes (`torch.autograd.backward` and
   `.grad`), the optimizer steps (a global step hook) and the batches drawn from the
   loaders;
3. then, in the same process, on the same model (restored by nndoctor), the same
   batches and the same torch thread count (`nndoctor.engine.threads.limited_threads`), runs a
   *bare loop* that does exactly that work, check by check: the same number of
   forward+backward+optimizer steps, forward+backward passes, forward-only passes, and
   batches drawn from the same loaders. It reads the loss once per step (`.item()`),
   as any loop that logs its loss does. Its steps compute the same values as
   nndoctor's, because a step's cost depends on them (subnormal floats are many times
   slower on a CPU: an LSTM's LR range test runs ~1.7x slower than the same number of
   steps at the LSTM's own LR): it draws the same seeded batches, starts each check's
   work from the weights as given (nndoctor restores them after every check), sweeps
   the LR as the range test does in the lr-find row, and trains on each batch as it is
   drawn in the fit row.

Every second run (the 2nd, 4th...) times the bare loop first (then put the model, optimizer and loader
RNGs back), so that neither side always finds the caches warm.

The ratio nndoctor / bare is the cost of the diagnosis beyond the steps it needs.
Peak memory (ru_maxrss, a per-process high-water mark) is measured in two more
subprocesses per run: one runs only nndoctor, one only the bare loop, both after
`import torch` and loading the target. Every figure is the median over the runs.

The floor of the lr-find row (`lr_finder_floor`): torch-lr-finder's own `range_test`
loop on a bare module against the bare loop with the same LR sweep, warm, in one
process; nndoctor cannot make the range test cheaper than that without replacing it.

End to end (`end_to_end`): the wall and CPU time of the whole `nndoctor check` process against
a process that imports torch, loads the target and runs the bare steps: the issue's
limit, "the steps it needs plus `import torch`", as a user waits for it.

Start-up: the median wall time of `nndoctor --help`, `nndoctor codes` and
`nndoctor explain dead-neurons` against `python -c "import torch"`, and whether
torch was imported by them at all.

The subprocesses write and use bytecode caches (__pycache__, git-ignored), as an installed
package has them, even where PYTHONDONTWRITEBYTECODE is set (`--no-bytecode` keeps it):
compiling nndoctor's modules on every start would add ~0.1-0.3 s that no user pays.

Not a test: the machines are noisy. tests/test_steps.py counts the steps instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = ["xor", "mlp", "simple_cnn", "text_classifier", "bottleneck", "transformer_encoder"]
WARMUP_STEPS = 3
# Counted per check; "train" = forward+backward+optimizer step, "fwd_bwd" = a forward and
# backward without a step, "fwd_grad"/"fwd_nograd" = forward-only passes with/without autograd.
KINDS = ("train", "fwd_bwd", "fwd_grad", "fwd_nograd")
# The checks that read the one-batch training run (whichever runs first does its steps):
# the bare loop trains on the first batch for them, on the batches drawn in turn otherwise.
SHARED_RUN_CHECKS = ("nan", "grads", "overfit")
FLOOR_STEPS = 100  # = lr_find.DEFAULTS["num_iter"], the steps Bare.run's LR sweep spans
SEED = 0  # the seed nndoctor runs with here; the bare loop draws its batches with it
POOL_SIZE = 20  # lr_find.MAX_BATCHES: the most batches nndoctor caches and cycles
FLOOR_REPEATS = 5


# =========================================================================== worker side

def _maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _load(sample: str):
    from nndoctor.target import load_target

    return load_target(os.path.join(ROOT, "sample_models", f"{sample}.py"))


class _CountingLoader:
    """Delegates to a loader and counts the batches drawn from it (for the current check)."""

    def __init__(self, loader, counts: dict, key: str, current: list):
        self._loader, self._counts, self._key, self._current = loader, counts, key, current

    def __iter__(self):
        for batch in self._loader:
            check = self._current[0]
            self._counts.setdefault(check, {}).setdefault(self._key, 0)
            self._counts[check][self._key] += 1
            yield batch

    def __len__(self):
        return len(self._loader)

    def __getattr__(self, name):  # sampler, generator, batch_size...: the loader's own
        return getattr(self._loader, name)


class _Counters:
    """Counts forward passes, backward passes and optimizer steps per check."""

    def __init__(self, model):
        import torch

        self.torch = torch
        self.current = ["(setup)"]
        self.counts: dict = {}
        self._handles = [model.register_forward_pre_hook(self._forward)]
        self._handles.append(__import__("torch.optim.optimizer", fromlist=["x"]).register_optimizer_step_post_hook(self._step))
        self._backward, self._grad = torch.autograd.backward, torch.autograd.grad

        def backward(*args, **kwargs):
            self._bump("backward")
            return self._backward(*args, **kwargs)

        def grad(*args, **kwargs):
            self._bump("backward")
            return self._grad(*args, **kwargs)

        torch.autograd.backward, torch.autograd.grad = backward, grad

    def remove(self):
        for h in self._handles:
            h.remove()
        self.torch.autograd.backward, self.torch.autograd.grad = self._backward, self._grad

    def _bump(self, key: str, n: int = 1):
        row = self.counts.setdefault(self.current[0], {})
        row[key] = row.get(key, 0) + n

    def _forward(self, module, args):
        self._bump("forward_grad" if self.torch.is_grad_enabled() else "forward_nograd")

    def _step(self, optimizer, args, kwargs):
        self._bump("step")

    def plan(self) -> dict:
        """check -> the bare loop's work: KINDS and the batches drawn from each loader."""
        out = {}
        for check, c in self.counts.items():
            steps, backward = c.get("step", 0), c.get("backward", 0)
            fwd_grad, fwd_nograd = c.get("forward_grad", 0), c.get("forward_nograd", 0)
            out[check] = {"train": steps, "fwd_bwd": max(backward - steps, 0),
                          "fwd_grad": max(fwd_grad - backward, 0), "fwd_nograd": fwd_nograd,
                          "train_batches": c.get("train_batches", 0), "val_batches": c.get("val_batches", 0)}
        return out


def _checks(with_lr_find: bool) -> list:
    from nndoctor import checks

    return [n for n in checks.CHECKS if with_lr_find or n != "lr-find"]


def run_nndoctor(setup, with_lr_find: bool, count: bool):
    """nndoctor's `check` on a loaded setup: (report, plan or None, wall seconds, CPU seconds
    {check: s, "total": s})."""
    from nndoctor.engine.runner import run_checks

    counters = None
    current = ["(setup)"]
    if count:
        counters = _Counters(setup.model)
        current = counters.current
        loader_counts = counters.counts
        setup.train_loader = _CountingLoader(setup.train_loader, loader_counts, "train_batches", current)
        if setup.val_loader is not None:
            setup.val_loader = _CountingLoader(setup.val_loader, loader_counts, "val_batches", current)

    cpu, mark = {}, [None, 0.0]

    def on_check(name):
        now = time.process_time()
        if mark[0] is not None:
            cpu[mark[0]] = now - mark[1]
        mark[:] = [name, now]
        current[0] = name

    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        report = run_checks(setup, _checks(with_lr_find), {}, target="bench", device="cpu", seed=SEED,
                            on_check=on_check)
    finally:
        if counters is not None:
            counters.remove()
    wall = time.perf_counter() - started
    end = time.process_time()
    if mark[0] is not None:
        cpu[mark[0]] = end - mark[1]
    cpu["total"] = end - cpu_started
    if count:
        setup.train_loader = setup.train_loader._loader
        if setup.val_loader is not None:
            setup.val_loader = setup.val_loader._loader
    return report, (counters.plan() if counters else None), wall, cpu


class Bare:
    """A plain training loop over the setup: the baseline nndoctor is measured against."""

    def __init__(self, setup):
        import torch
        import torch.nn as nn

        self.torch = torch
        self.setup, self.model = setup, setup.model
        self.optimizer = setup.optimizer or torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.criterion = setup.criterion
        self.pool: list = []  # batches drawn so far, reused round-robin like nndoctor's cache
        self._iters: dict = {}
        self._first_epoch = True
        self._start = None
        self._nn = nn

    def keep_start(self) -> Bare:
        """Copy the weights and optimizer state now, for rewind()."""
        import copy

        self._start = ({k: v.detach().clone() for k, v in self.model.state_dict().items()},
                       copy.deepcopy(self.optimizer.state_dict()))
        return self

    def rewind(self) -> None:
        """Back to the kept weights and optimizer state: each of nndoctor's checks starts from
        the model as given, so the bare loop's row for it does too (the same values)."""
        import copy

        weights, optimizer = self._start
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(copy.deepcopy(optimizer))

    def draw(self, key: str, n: int):
        """Draw n batches from a loader, as a training loop does (a new epoch when it ends);
        returns the last one.

        The first training batches are drawn as nndoctor's session draws its cached ones
        (seeded: engine.Session.batches), so the pool holds the very batches nndoctor
        trains on: the same values, hence the same cost (subnormal floats are slow)."""
        from nndoctor.engine.session import rng_state, seed_everything, set_rng_state

        loader = self.setup.train_loader if key == "train" else self.setup.val_loader
        for _ in range(n):
            seeded = key == "train" and self._first_epoch and len(self.pool) < POOL_SIZE
            it = self._iters.get(key)
            if it is None and seeded:
                state = rng_state()
                seed_everything(SEED)
                it = self._iters[key] = iter(loader)
                set_rng_state(state)
            try:
                if it is None:
                    raise StopIteration
                if seeded:
                    state = rng_state()
                    seed_everything(SEED + len(self.pool))
                    try:
                        batch = next(it)
                    finally:
                        set_rng_state(state)
                else:
                    batch = next(it)
            except StopIteration:
                if key == "train" and it is not None:
                    self._first_epoch = False
                it = self._iters[key] = iter(loader)
                batch = next(it)
            if key == "train" and len(self.pool) < POOL_SIZE:
                self.pool.append(batch)
        return batch if n else None

    def loss(self, batch):
        if self.setup.loss_fn is not None:
            return self.setup.loss_fn(self.model, batch)
        if isinstance(batch, dict):
            out = self.model(**batch)
            return out["loss"] if isinstance(out, dict) else out.loss
        x, y = batch[0], batch[1]
        out = self.model(*x) if isinstance(x, (tuple, list)) else self.model(x)
        if self.criterion is None:
            integer = not y.is_floating_point()
            self.criterion = self._nn.CrossEntropyLoss() if integer else self._nn.MSELoss()
        return self.criterion(out, y)

    def forward_only(self, batch):
        if self.setup.loss_fn is not None:
            return self.setup.loss_fn(self.model, batch)
        if isinstance(batch, dict):
            return self.model(**batch)
        x = batch[0]
        return self.model(*x) if isinstance(x, (tuple, list)) else self.model(x)

    def run(self, work: dict, same_batch: bool = False, lr_sweep: bool = False) -> None:
        """Do `work`. `lr_sweep`: set each step's LR as the LR range test does (exponential,
        lr_find.DEFAULTS' start_lr to end_lr over num_iter steps), so its steps see the same
        weights and values as the test's; the steps after those are the race's, which trains
        LRs of the usable range: they run at the optimizer's own LR. The LRs are put back after."""
        torch, model, opt = self.torch, self.model, self.optimizer
        steps, drawn = work.get("train", 0), work.get("train_batches", 0)
        # A row that draws a batch per step (fit's epochs) trains on each batch as it is drawn,
        # as `for batch in loader` does; the others train on the cached pool, as nndoctor does.
        fresh = not same_batch and steps > 0 and drawn >= steps
        self.draw("train", drawn - steps if fresh else drawn)
        if work.get("val_batches"):
            self.draw("val", work["val_batches"])
        if not self.pool:
            self.draw("train", 1)
        pool, k = self.pool, 0
        lrs = [g["lr"] for g in opt.param_groups]
        if lr_sweep:
            from nndoctor.checks.lr_find import DEFAULTS

            start, end, num_iter = DEFAULTS["start_lr"], DEFAULTS["end_lr"], DEFAULTS["num_iter"]
        model.train()
        for i in range(steps):
            if lr_sweep and i < num_iter:
                for g in opt.param_groups:
                    g["lr"] = start * (end / start) ** (i / (num_iter - 1))
            elif lr_sweep and i == num_iter:  # the race
                for g, lr in zip(opt.param_groups, lrs):
                    g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss = self.loss(self.draw("train", 1) if fresh else pool[0 if same_batch else k % len(pool)])
            loss.backward()
            opt.step()
            loss.item()
            k += 1
        for g, lr in zip(opt.param_groups, lrs):
            g["lr"] = lr
        for _ in range(work.get("fwd_bwd", 0)):
            opt.zero_grad(set_to_none=True)
            loss = self.loss(pool[k % len(pool)])
            loss.backward()
            loss.item()
            k += 1
        opt.zero_grad(set_to_none=True)
        for _ in range(work.get("fwd_grad", 0)):
            self.forward_only(pool[k % len(pool)])
            k += 1
        with torch.no_grad():
            for _ in range(work.get("fwd_nograd", 0)):
                self.forward_only(pool[k % len(pool)])
                k += 1


def _warm_up(sample: str) -> None:
    """A few steps of a separate copy, so neither side pays torch's first-call costs."""

    bare = Bare(_load(sample))
    bare.run({"train": WARMUP_STEPS, "fwd_nograd": 1, "train_batches": 1})
    del bare


def time_bare(setup, plan: dict, order: list) -> dict:
    """The bare loop doing `plan`, check by check, timed; the model, optimizer and loader
    RNGs are put back afterwards (untimed), so nndoctor may run after it on the same setup."""
    from nndoctor.engine.session import _loader_generators
    from nndoctor.engine.threads import limited_threads

    generators = [(g, g.get_state()) for g in _loader_generators(setup)]
    bare = Bare(setup).keep_start()  # its copy of the weights and optimizer state serves both
    rows, cpu = {}, {}
    with limited_threads():
        for check in order:
            work = plan.get(check, {})
            if any(work.values()):
                bare.rewind()  # untimed
            t, c = time.perf_counter(), time.process_time()
            if any(work.values()):
                bare.run(work, same_batch=check in SHARED_RUN_CHECKS, lr_sweep=check == "lr-find")
            rows[check], cpu[check] = time.perf_counter() - t, time.process_time() - c
        total, total_cpu = sum(rows.values()), sum(cpu.values())
    bare.rewind()
    for g, state in generators:
        g.set_state(state)
    setup.model.zero_grad(set_to_none=True)
    return {"total_s": total, "total_cpu": total_cpu, "checks": rows, "cpu": cpu}


def lr_finder_floor(setup, repeats: int) -> dict:
    """torch-lr-finder's own loop against the bare loop, with nothing of nndoctor's around it.

    `LRFinder.range_test` runs FLOOR_STEPS steps on a plain module wrapping the bare loop's
    loss (the batches it draws are the bare loop's, cached); the bare loop runs as many
    steps on the same batches. Untimed: the finder's construction (it copies the state)
    and its reset(). Warm, in one process, alternating, `repeats` pairs: what the range
    test costs over the steps it takes before nndoctor adds anything, the floor of the
    lr-find row."""
    import warnings

    import torch.nn as nn
    import torch_lr_finder.lr_finder as tlf

    from nndoctor.checks.lr_find import DEFAULTS
    from nndoctor.engine.threads import limited_threads

    bare = Bare(setup).keep_start()
    bare.draw("train", 8)
    pool = bare.pool

    class LossOf(nn.Module):  # the finder's "model": a batch in, the bare loop's loss out
        def __init__(self):
            super().__init__()
            self.model = setup.model

        def forward(self, batch):
            return bare.loss(batch)

    class Batches(tlf.TrainDataLoaderIter):
        def __init__(self):  # no DataLoader behind it: the pool, cycled
            self.k = 0

        def __next__(self):
            self.k += 1
            return pool[self.k % len(pool)], None

    def bare_steps():
        bare.rewind()  # untimed, as the finder's reset()
        t, c = time.perf_counter(), time.process_time()
        bare.run({"train": FLOOR_STEPS}, lr_sweep=True)
        return time.perf_counter() - t, time.process_time() - c

    def finder_steps():
        bare.rewind()  # untimed: the finder starts from the same weights as the bare loop
        finder = tlf.LRFinder(LossOf(), bare.optimizer, lambda loss, _: loss, device="cpu")
        t, c = time.perf_counter(), time.process_time()
        finder.range_test(Batches(), start_lr=DEFAULTS["start_lr"], end_lr=DEFAULTS["end_lr"],
                          num_iter=FLOOR_STEPS,
                          diverge_th=float("inf"))
        spent = time.perf_counter() - t, time.process_time() - c
        finder.reset()
        return spent

    wall, cpu = {"bare": [], "finder": []}, {"bare": [], "finder": []}
    with limited_threads(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved_tqdm, saved_print = tlf.tqdm, getattr(tlf, "print", None)
        tlf.tqdm, tlf.print = (lambda it: it), (lambda *a, **k: None)
        try:
            bare_steps(), finder_steps()  # warm-up, untimed
            for _ in range(repeats):
                w, c = bare_steps()
                wall["bare"].append(w)
                cpu["bare"].append(c)
                w, c = finder_steps()
                wall["finder"].append(w)
                cpu["finder"].append(c)
        finally:
            tlf.tqdm = saved_tqdm
            if saved_print is None:
                del tlf.print
            else:
                tlf.print = saved_print
    med = statistics.median
    return {"steps": FLOOR_STEPS, "repeats": repeats,
            "ratio": med([f / b for f, b in zip(wall["finder"], wall["bare"])]),
            "cpu_ratio": med([f / b for f, b in zip(cpu["finder"], cpu["bare"])]),
            "bare_s": med(wall["bare"]), "finder_s": med(wall["finder"])}


def worker(mode: str, sample: str, with_lr_find: bool, plan_json: str | None) -> dict:
    from nndoctor.engine.threads import limited_threads

    started = time.perf_counter()
    import torch  # noqa: F401  (what both sides need anyway)

    import_torch = time.perf_counter() - started
    setup = _load(sample)
    out = {"sample": sample, "mode": mode, "import_torch_s": import_torch,
           "rss_after_load_mb": _maxrss_mb()}
    if mode == "time":
        with limited_threads():
            _warm_up(sample)
        # Odd runs time the bare loop first: whichever runs second finds the allocator and
        # caches warm, so the order alternates and the medians mix both.
        given = json.loads(plan_json) if plan_json else None
        if given is not None:
            out["bare"] = time_bare(setup, given, order=list(given))
        report, plan, wall, cpu = run_nndoctor(setup, with_lr_find, count=True)
        out["nndoctor"] = {"total_s": wall, "total_cpu": cpu["total"],
                           "checks": {c.name: {"seconds": c.seconds, "cpu": cpu.get(c.name, 0.0),
                                               "status": c.status} for c in report.checks}}
        out["plan"] = plan
        out["bare_first"] = given is not None
        if given is None:
            out["bare"] = time_bare(setup, plan, order=["(setup)"] + [c.name for c in report.checks])
    elif mode == "lr-finder-floor":
        out["floor"] = lr_finder_floor(setup, int(plan_json or FLOOR_REPEATS))
    elif mode == "rss-nndoctor":
        report, _, wall, _ = run_nndoctor(setup, with_lr_find, count=False)
        out["seconds"] = wall
        out["peak_rss_mb"] = _maxrss_mb()
    elif mode in ("rss-bare", "e2e-bare"):
        # rss-bare keeps no copy of the weights (its peak is the bare loop's own); e2e-bare,
        # timed from outside as a whole process, rewinds the model before each check's work
        # as nndoctor does, so its steps see the same values.
        plan = json.loads(plan_json)
        bare = Bare(setup)
        if mode == "e2e-bare":
            bare.keep_start()
        t = time.perf_counter()
        with limited_threads():
            for check, work in plan.items():
                if mode == "e2e-bare" and any(work.values()):
                    bare.rewind()
                bare.run(work, same_batch=check in SHARED_RUN_CHECKS, lr_sweep=check == "lr-find")
        out["seconds"] = time.perf_counter() - t
        out["peak_rss_mb"] = _maxrss_mb()
    return out


# =========================================================================== driver side

ENV = dict(os.environ)


def _spawn(args: list, timeout: float = 1800) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=ENV)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _wall(cmd: list) -> float:
    return _timed(cmd)[0]


def _timed(cmd: list) -> tuple:
    """(wall seconds, CPU seconds: user + system) of a subprocess run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def startup(runs: int) -> dict:
    nnd = _nndoctor_cli()
    commands = {
        "import torch": [sys.executable, "-c", "import torch"],
        "nndoctor --help": nnd + ["--help"],
        "nndoctor codes": nnd + ["codes"],
        "nndoctor explain dead-neurons": nnd + ["explain", "dead-neurons"],
    }
    times = {k: [] for k in commands}
    for cmd in commands.values():  # once untimed: bytecode compiled and cached, files in the page cache
        _wall(cmd)
    for _ in range(runs):  # interleaved, so a burst of load hits every command alike
        for k, cmd in commands.items():
            times[k].append(_wall(cmd))
    probe = ("import sys\nfrom nndoctor.cli import main\nsys.argv = ['nndoctor'] + sys.argv[1:]\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "sys.stderr.write('\\nTORCH_IMPORTED=%s\\n' % ('torch' in sys.modules))")
    result = {}
    base = statistics.median(times["import torch"])
    for k, ts in times.items():
        row = {"seconds": statistics.median(ts), "ratio": statistics.median(ts) / base}
        if k != "import torch":
            args = k.split()[1:]
            proc = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True,
                                  text=True, env=ENV)
            row["imports_torch"] = "TORCH_IMPORTED=True" in proc.stderr
        result[k] = row
    return result


def _nndoctor_cli() -> list:
    exe = shutil.which("nndoctor")
    return [exe] if exe else [sys.executable, "-m", "nndoctor"]


def end_to_end(sample: str, plan: dict, runs: int, with_lr_find: bool) -> dict:
    """Wall and CPU time of the whole process, as a user waits for it: `nndoctor check` on
    the sample against a process that imports torch, loads the same target and runs the
    bare loop's steps (the issue's limit: the steps plus `import torch`). Interleaved per
    run, with and without lr-find (`--skip lr-find` against the plan without its row).
    CPU time (user + system) leaves out waiting for a core or the disk, which makes
    `import torch` vary by seconds between processes on a shared machine."""
    target = os.path.join("sample_models", f"{sample}.py")
    check = _nndoctor_cli() + ["check", target, "--seed", "0", "--format", "json"]
    bare = [sys.executable, os.path.abspath(__file__), "--worker", "e2e-bare", sample, "0"]
    variants = {"without_lr_find": (check + ["--skip", "lr-find"],
                                    {k: v for k, v in plan.items() if k != "lr-find"})}
    if with_lr_find:
        variants["with_lr_find"] = (check, plan)
    times = {k: {"check": [], "bare": []} for k in variants}
    for cmd, work in variants.values():  # once untimed: page cache, bytecode
        _wall(cmd), _wall(bare + [json.dumps(work)])
    for _ in range(runs):
        for name, (cmd, work) in variants.items():
            times[name]["check"].append(_timed(cmd))
            times[name]["bare"].append(_timed(bare + [json.dumps(work)]))
    med = statistics.median
    out = {}
    for name, t in times.items():
        (check_wall, check_cpu), (bare_wall, bare_cpu) = zip(*t["check"]), zip(*t["bare"])
        out[name] = {"check_s": med(check_wall), "bare_s": med(bare_wall),
                     "ratio": med([c / b for c, b in zip(check_wall, bare_wall)]),
                     "check_cpu": med(check_cpu), "bare_cpu": med(bare_cpu),
                     "cpu_ratio": med([c / b for c, b in zip(check_cpu, bare_cpu)])}
    return out


def bench_sample(sample: str, runs: int, with_lr_find: bool, rss: int, log, e2e: bool = True) -> dict:
    flag = "1" if with_lr_find else "0"
    timings, rss_nd, rss_bare = [], [], []
    for r in range(runs):
        t = time.perf_counter()
        plan = [json.dumps(timings[0]["plan"])] if r % 2 == 1 else []
        res = _spawn(["time", sample, flag, *plan])
        timings.append(res)
        if r < rss:
            rss_nd.append(_spawn(["rss-nndoctor", sample, flag]))
            rss_bare.append(_spawn(["rss-bare", sample, flag, json.dumps(res["plan"])]))
        nd, bare = res["nndoctor"]["total_s"], res["bare"]["total_s"]
        log(f"  {sample} run {r + 1}/{runs}{' (bare first)' if res['bare_first'] else ''}: nndoctor "
            f"{nd:.2f} s, bare {bare:.2f} s, ratio {nd / bare:.2f} ({time.perf_counter() - t:.0f} s)")
    result = summarise(sample, runs, with_lr_find, timings, rss_nd, rss_bare)
    if with_lr_find:
        t = time.perf_counter()
        result["lr_finder_floor"] = _spawn(["lr-finder-floor", sample, flag, str(FLOOR_REPEATS)])["floor"]
        log(f"  {sample} torch-lr-finder alone: {result['lr_finder_floor']['ratio']:.2f}x the bare "
            f"loop ({time.perf_counter() - t:.0f} s)")
    if e2e:
        t = time.perf_counter()
        result["end_to_end"] = end_to_end(sample, timings[0]["plan"], runs, with_lr_find)
        log(f"  {sample} end to end (CPU): " + ", ".join(f"{k} {v['cpu_ratio']:.2f}" for k, v in
                                                           result["end_to_end"].items())
            + f" ({time.perf_counter() - t:.0f} s)")
    return result


def _ratio(a, b):
    return a / b if a is not None and b else None


def summarise(sample, runs, with_lr_find, timings, rss_nd, rss_bare) -> dict:
    """Medians over the runs, per check and in total, of wall and CPU seconds and their ratios.

    CPU seconds (time.process_time, torch on one thread) leave out the time the process
    waited for a core, which on a shared machine is most of the noise; wall seconds are
    what a user on a quiet machine waits. Both are reported."""
    med = statistics.median
    checks = list(timings[0]["nndoctor"]["checks"])
    rows = []
    for name in ["(setup)"] + checks:
        plan = timings[0]["plan"].get(name, {})
        if name == "(setup)" and not any(plan.values()):
            continue
        ours = name in checks
        nd = [t["nndoctor"]["checks"][name]["seconds"] for t in timings] if ours else None
        nd_cpu = [t["nndoctor"]["checks"][name]["cpu"] for t in timings] if ours else None
        bare = [t["bare"]["checks"].get(name, 0.0) for t in timings]
        bare_cpu = [t["bare"]["cpu"].get(name, 0.0) for t in timings]
        has_work = any(plan.values())
        row = {"check": name, "status": timings[0]["nndoctor"]["checks"][name]["status"] if ours else "",
               **{k: plan.get(k, 0) for k in KINDS},
               "batches": plan.get("train_batches", 0) + plan.get("val_batches", 0),
               "seconds": med(nd) if ours else None, "bare_seconds": med(bare),
               "cpu": med(nd_cpu) if ours else None, "bare_cpu": med(bare_cpu),
               "per_run": {"seconds": nd, "bare_seconds": bare, "cpu": nd_cpu, "bare_cpu": bare_cpu}}
        row["ratio"] = _ratio(row["seconds"], row["bare_seconds"]) if has_work else None
        row["cpu_ratio"] = _ratio(row["cpu"], row["bare_cpu"]) if has_work else None
        rows.append(row)

    def total(drop=()):
        nd = [t["nndoctor"]["total_s"] - sum(t["nndoctor"]["checks"][c]["seconds"] for c in drop) for t in timings]
        nd_cpu = [t["nndoctor"]["total_cpu"] - sum(t["nndoctor"]["checks"][c]["cpu"] for c in drop)
                  for t in timings]
        bare = [t["bare"]["total_s"] - sum(t["bare"]["checks"].get(c, 0.0) for c in drop) for t in timings]
        bare_cpu = [t["bare"]["total_cpu"] - sum(t["bare"]["cpu"].get(c, 0.0) for c in drop) for t in timings]
        # the ratio of each run, then the median: the two sides of one run shared its load
        return {"seconds": med(nd), "bare_seconds": med(bare), "cpu": med(nd_cpu), "bare_cpu": med(bare_cpu),
                "ratio": med([a / b for a, b in zip(nd, bare)]),
                "cpu_ratio": med([a / b for a, b in zip(nd_cpu, bare_cpu)])}

    out = {"sample": sample, "runs": runs, "with_lr_find": with_lr_find, "checks": rows,
           "per_run": [{"seconds": t["nndoctor"]["total_s"], "bare_seconds": t["bare"]["total_s"],
                        "cpu": t["nndoctor"]["total_cpu"], "bare_cpu": t["bare"]["total_cpu"],
                        "bare_first": t["bare_first"]} for t in timings],
           "total": {**total(), **{k: sum(r[k] for r in rows) for k in KINDS}},
           "import_torch_s": med([t["import_torch_s"] for t in timings])}
    if with_lr_find:  # the same runs without the lr-find row: what `check --skip lr-find` costs
        out["total_without_lr_find"] = total(drop=("lr-find",))
    if rss_nd:
        nd_peak, bare_peak = med([x["peak_rss_mb"] for x in rss_nd]), med([x["peak_rss_mb"] for x in rss_bare])
        base = med([x["rss_after_load_mb"] for x in rss_bare])
        out["rss"] = {"runs": len(rss_nd), "after_load_mb": base, "nndoctor_peak_mb": nd_peak,
                      "bare_peak_mb": bare_peak, "ratio": nd_peak / bare_peak,
                      "nndoctor_above_load_mb": nd_peak - base, "bare_above_load_mb": bare_peak - base}
    return out


def _fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)


def print_sample(res: dict, out=sys.stdout) -> None:
    p = lambda s="": print(s, file=out)  # noqa: E731
    p(f"\n{res['sample']}  (median of {res['runs']} runs; steps = forward+backward+optimizer step; "
      f"seconds: CPU, wall)")
    p(f"  {'check':11s} {'steps':>5s} {'fwd+bwd':>7s} {'fwd-only':>8s} {'batches':>7s} "
      f"{'nndoctor':>8s} {'bare':>8s} {'ratio':>6s} {'wall':>8s} {'bare':>8s} {'ratio':>6s}")

    def line(name, r, counts=True):
        c = (f"{r['train']:5d} {r['fwd_bwd']:7d} {r['fwd_grad'] + r['fwd_nograd']:8d} {r['batches']:7d}"
             if counts == "all" else f"{r['train']:5d} {r['fwd_bwd']:7d} {r['fwd_grad'] + r['fwd_nograd']:8d} "
             f"{'':7s}" if counts else f"{'':5s} {'':7s} {'':8s} {'':7s}")
        p(f"  {name:11s} {c} {_fmt(r['cpu'], '.3f'):>8s} {_fmt(r['bare_cpu'], '.3f'):>8s} "
          f"{_fmt(r['cpu_ratio']):>6s} {_fmt(r['seconds'], '.3f'):>8s} {_fmt(r['bare_seconds'], '.3f'):>8s} "
          f"{_fmt(r['ratio']):>6s}")

    for r in res["checks"]:
        line(r["check"], r, "all")
    line("TOTAL", res["total"])
    if "total_without_lr_find" in res:
        line("w/o lr-find", res["total_without_lr_find"], counts=False)
    if "rss" in res:
        m = res["rss"]
        p(f"  peak RSS: nndoctor {m['nndoctor_peak_mb']:.0f} MB, bare {m['bare_peak_mb']:.0f} MB, "
          f"ratio {m['ratio']:.2f} (after import torch + load: {m['after_load_mb']:.0f} MB; above it "
          f"+{m['nndoctor_above_load_mb']:.0f} vs +{m['bare_above_load_mb']:.0f} MB)")


def print_summary(results: list, start: dict | None, out=sys.stdout) -> None:
    p = lambda s="": print(s, file=out)  # noqa: E731
    lr = bool(results) and results[0]["with_lr_find"]
    p("\nSUMMARY  (nndoctor / a bare loop doing the same steps, median of the runs' ratios;"
      " targets: time <= 1.2, RSS <= 1.5)")
    head = f"  {'sample':20s} {'steps':>5s} {'bare s':>7s} {'check s':>8s} {'CPU':>5s} {'wall':>5s}"
    if lr:
        head += f" {'w/o lr-find CPU':>15s} {'wall':>5s}"
    p(head + f" {'RSS':>5s}")
    for res in results:
        t = res["total"]
        line = (f"  {res['sample']:20s} {t['train']:5d} {t['bare_seconds']:7.2f} {t['seconds']:8.2f} "
                f"{t['cpu_ratio']:5.2f} {t['ratio']:5.2f}")
        if lr:
            w = res["total_without_lr_find"]
            line += f" {w['cpu_ratio']:15.2f} {w['ratio']:5.2f}"
        p(line + f" {_fmt(res.get('rss', {}).get('ratio')):>5s}")
    if any("lr_finder_floor" in r for r in results):
        p("\nTORCH-LR-FINDER ALONE  (its range_test loop / the bare loop, same steps, warm, one"
          " process; the floor of the lr-find row)")
        for res in results:
            f = res.get("lr_finder_floor")
            if f:
                p(f"  {res['sample']:20s} {f['steps']:5d} steps  bare {f['bare_s']:6.3f} s  "
                  f"range_test {f['finder_s']:6.3f} s  ratio {f['ratio']:5.2f}  CPU {f['cpu_ratio']:5.2f}")
    if any("end_to_end" in r for r in results):
        p("\nEND TO END  (the whole process: `nndoctor check` against import torch + load + the"
          " bare steps; median seconds, CPU = user + system, and the median of the runs' ratios)")
        p(f"  {'sample':20s} {'':12s} {'bare CPU':>8s} {'check CPU':>9s} {'ratio':>6s}"
          f" {'bare wall':>9s} {'check wall':>10s} {'ratio':>6s}")
        for res in results:
            for name, e in res.get("end_to_end", {}).items():
                label = "w/o lr-find" if name == "without_lr_find" else "with lr-find"
                p(f"  {res['sample']:20s} {label:12s} {e['bare_cpu']:8.2f} {e['check_cpu']:9.2f}"
                  f" {e['cpu_ratio']:6.2f} {e['bare_s']:9.2f} {e['check_s']:10.2f} {e['ratio']:6.2f}")
    if start:
        p("\nSTART-UP  (median wall time; target <= 0.25 x import torch, torch not imported)")
        for k, row in start.items():
            extra = "" if "imports_torch" not in row else f"  imports torch: {'YES' if row['imports_torch'] else 'no'}"
            p(f"  {k:32s} {row['seconds']:6.3f} s  {row['ratio']:5.2f} x{extra}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4,
                        help="runs per sample (medians are reported; an even count times each side first equally often)")
    parser.add_argument("--samples", default=",".join(SAMPLES), help="comma-separated sample names")
    parser.add_argument("--with-lr-find", action="store_true", help="include the lr-find check")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--rss-runs", type=int, default=None,
                        help="runs that also measure peak RSS (default: every run)")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up timings")
    parser.add_argument("--no-end-to-end", action="store_true",
                        help="skip the whole-process timings of `nndoctor check`")
    parser.add_argument("--startup-runs", type=int, default=None, help="default: max(5, --runs)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE if set (default: the subprocesses cache "
                             "bytecode, as an installed package has it)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        mode, sample, flag = args.worker[:3]
        plan = args.worker[3] if len(args.worker) > 3 else None
        print(json.dumps(worker(mode, sample, flag == "1", plan)))
        return 0

    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if not args.no_bytecode:
        ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "nndoctor")],
                       env=ENV, check=False)
    results = []
    for sample in [s.strip() for s in args.samples.split(",") if s.strip()]:
        rss = 0 if args.no_rss else (args.runs if args.rss_runs is None else args.rss_runs)
        res = bench_sample(sample, args.runs, args.with_lr_find, rss, log, e2e=not args.no_end_to_end)
        print_sample(res)
        sys.stdout.flush()
        results.append(res)
    start = None
    if not args.no_startup:
        log("start-up timings...")
        start = startup(args.startup_runs or max(5, args.runs))
    print_summary(results, start)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples": results, "startup": start, "cores": os.cpu_count()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.exit(main())
