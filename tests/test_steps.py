"""`check` does the training steps it needs and little else (issue 5).

Not timed (the machines are noisy; bench/bench.py measures the time): these count
what is done. A forward pre-hook on the root model counts its forward passes, a
wrapper of `torch.autograd.backward`/`grad` the backward passes, a global optimizer
hook the steps, each per check (the runner's `on_check`).

The plan, per check: `overfit` (with `nan` and `grads`): one shared run of
`overfit.steps` steps and a forward-only scan of the trained weights; `lr-find`: at most
`num_iter` steps of the range test and as many for the race (`race_steps`, plus a
confirmation only before a verdict); `dead`: `SCAN_BATCHES` to `MAX_SCAN_BATCHES`
forward-only passes; `fit`: its epochs over the loaders; plus the fixed passes in `FIXED` below.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.optim.optimizer as optim_module
from conftest import ROOT, load_sample

from nndoctor import checks as registry
from nndoctor.checks import lr_find
from nndoctor.engine.runner import run_checks
from nndoctor.probes import activations as scan
from nndoctor.probes import train_run as instrument

# Forward passes a check makes besides its training steps and scan batches (documented):
# size: torchinfo's summary and the FlopCounterMode pass; init: the recorded forward of the
# first batch (shared with data) and the batch-dependency probe's forward/backward; static: its
# traced eval forward (two more only when a dropout call runs in eval, a backward per emulated step
# only when a layer's units start identical).
FIXED = {"size": 2, "init": 2, "static": 1}
ALL_BUT_FIT = [n for n in registry.CHECKS if n != "fit"]


class Counts:
    def __init__(self):
        self.current = "(setup)"
        self.per_check: dict = {}

    def bump(self, key):
        row = self.per_check.setdefault(self.current, {"forward": 0, "backward": 0, "step": 0})
        row[key] += 1

    def total(self, key):
        return sum(row[key] for row in self.per_check.values())

    def of(self, check, key):
        return self.per_check.get(check, {}).get(key, 0)


@pytest.fixture
def counted(monkeypatch):
    """run(sample, checks, settings) -> (report, Counts)."""
    counts = Counts()
    backward, grad = torch.autograd.backward, torch.autograd.grad

    def counting_backward(*args, **kwargs):
        counts.bump("backward")
        return backward(*args, **kwargs)

    def counting_grad(*args, **kwargs):
        counts.bump("backward")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "backward", counting_backward)
    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    step_hook = optim_module.register_optimizer_step_post_hook(lambda *a: counts.bump("step"))

    def run(sample, checks, settings=None):
        setup = load_sample(sample)
        handle = setup.model.register_forward_pre_hook(lambda *a: counts.bump("forward"))

        def on_check(name):
            counts.current = name

        try:
            report = run_checks(setup, checks, settings or {}, target=sample, device="cpu", seed=0,
                                on_check=on_check)
        finally:
            handle.remove()
        return report, counts

    yield run
    step_hook.remove()


def test_the_shared_run_is_done_once_for_overfit_grads_and_nan(counted, monkeypatch):
    calls, runs = [], []
    real = instrument.train_run
    monkeypatch.setattr(instrument, "train_run",
                        lambda session, steps, *rest: calls.append(steps) or runs.append(real(session, steps, *rest))
                        or runs[-1])
    report, counts = counted("xor", ["nan", "grads", "overfit"], {"overfit": {"steps": 12}})
    assert all(c.status != "error" for c in report.checks)  # 12 steps: overfit may well fail
    assert calls == [12]
    # exactly the planned steps, all in the first check that asked; the other two read them;
    # plus the forward-only activation scan of the trained weights (the dead check reads it)
    scanned = runs[0].activations_after.batches
    assert scan.SCAN_BATCHES <= scanned <= scan.MAX_SCAN_BATCHES
    assert (counts.of("nan", "forward"), counts.of("nan", "backward"), counts.of("nan", "step")) == \
        (12 + scanned, 12, 12)
    for check in ("grads", "overfit"):
        assert counts.of(check, "forward") == counts.of(check, "backward") == counts.of(check, "step") == 0


def test_check_makes_no_more_forward_passes_than_planned(counted):
    steps, num_iter = 10, 20
    settings = {"overfit": {"steps": steps}, "lr-find": {"num_iter": num_iter}}
    report, counts = counted("xor", ALL_BUT_FIT, settings)
    assert all(c.status not in ("error", "skipped") for c in report.checks), \
        [(c.name, c.status, c.reason) for c in report.checks]
    # the scans (at init in dead, of the trained weights in the shared run) read batches until
    # every unit has scan.MIN_OBSERVATIONS, at most MAX_SCAN_BATCHES each
    # lr-find: the range test's num_iter steps, the race's (num_iter by default), the confirming
    # steps when a verdict looms (at most CONFIRM_SHARE x the race's), and one forward-only
    # pass per race batch for the initial model's loss (the baseline of progress)
    race_steps = num_iter + int(lr_find.CONFIRM_SHARE * num_iter)
    lr_steps = num_iter + race_steps
    planned = {"size": FIXED["size"], "data": 0, "static": FIXED["static"], "init": FIXED["init"],
               "nan": steps + scan.MAX_SCAN_BATCHES, "grads": 0, "dead": scan.MAX_SCAN_BATCHES,
               "overfit": 0, "lr-find": lr_steps + min(num_iter, lr_find.MAX_BATCHES)}
    done = {check: counts.of(check, "forward") for check in planned}
    assert all(done[c] <= planned[c] for c in planned), (done, planned)
    assert counts.total("forward") <= steps + planned["lr-find"] + 2 * scan.MAX_SCAN_BATCHES + sum(FIXED.values())
    # the training steps are exactly the shared run's and the range test's
    assert counts.total("step") == steps + counts.of("lr-find", "step")
    assert counts.of("lr-find", "step") <= lr_steps
    section = report.sections["lr_find"]  # the steps the report states are the steps taken
    assert counts.of("lr-find", "step") == section["range_steps"] + section["race_steps"]
    # backward passes: one per training step, plus init's batch-dependency probe (one per
    # probed sample: the first, a middle and the last)
    assert counts.total("backward") <= counts.total("step") + 3
    # the scan is forward-only
    assert counts.of("dead", "backward") == counts.of("dead", "step") == 0


def test_fit_trains_its_epochs_and_nothing_more(counted):
    report, counts = counted("mlp", ["fit"], {"fit": {"epochs": 2}})
    assert report.checks[0].status in ("pass", "warning")
    setup = load_sample("mlp")
    train, val = len(setup.train_loader), len(setup.val_loader)
    assert counts.of("fit", "step") == 2 * train
    # eval forwards of the val loader and, in the same eval mode, of the first training batches
    same_mode = report.checks[0].metrics["train_eval_batches"]
    assert 1 <= same_mode <= train
    assert counts.of("fit", "forward") == 2 * (train + val + same_mode)


def test_a_step_reads_its_statistics_with_one_host_sync(counted, monkeypatch):
    """The shared run reduces the loss and every gradient's norm on the device and reads them
    with one `tolist()` a step: no `.item()` per parameter (the optimizer's own reads of its
    step counters, inside `optimizer.step()`, are not ours)."""
    reads = {"item": 0, "tolist": 0}
    item, tolist = torch.Tensor.item, torch.Tensor.tolist
    inside, stepping = [], []
    real = instrument.train_run

    def train_run(session, steps):
        inside.append(True)
        try:
            return real(session, steps)
        finally:
            inside.pop()

    def counting(name, method):
        def wrapper(self, *args, **kwargs):
            if inside and not stepping:
                reads[name] += 1
            return method(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(instrument, "train_run", train_run)
    monkeypatch.setattr(torch.Tensor, "item", counting("item", item))
    monkeypatch.setattr(torch.Tensor, "tolist", counting("tolist", tolist))
    pre = optim_module.register_optimizer_step_pre_hook(lambda *a: stepping.append(True))
    post = optim_module.register_optimizer_step_post_hook(lambda *a: stepping.pop())
    try:
        steps = 15
        counted("mlp", ["grads"], {"overfit": {"steps": steps}})
    finally:
        pre.remove()
        post.remove()
    # The run fetches its batch: the DataLoader reads its base seed (.item()) and the sampler
    # its permutation (.tolist()), once.
    assert reads["item"] <= 1
    assert reads["tolist"] <= steps + 1 + 1  # one per step, the last step's update norms, the sampler


def test_no_deep_copy_of_the_model(counted, monkeypatch):
    import copy

    import torch.nn as nn

    copied = []
    real = copy.deepcopy

    def deepcopy(obj, *args, **kwargs):
        if isinstance(obj, (nn.Module, torch.optim.Optimizer)):
            copied.append(type(obj).__name__)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", deepcopy)
    counted("xor", ALL_BUT_FIT, {"overfit": {"steps": 5}, "lr-find": {"num_iter": 20}})
    assert copied == []


@pytest.mark.slow
def test_lr_find_runs_without_importing_matplotlib():
    """lr-find runs torch-lr-finder without importing matplotlib (it only plots with it), and
    a check run imports matplotlib only for a plot that was asked for."""
    code = (
        "import sys, json\n"
        "sys.path.insert(0, 'tests')\n"
        "from conftest import run_checks_on\n"
        "report = run_checks_on('xor', ['size', 'lr-find'], settings={'lr-find': {'num_iter': 20}})\n"
        "print(json.dumps({'status': [c.status for c in report.checks],\n"
        "                  'mods': [m for m in ('matplotlib', 'matplotlib.pyplot', 'torch_lr_finder', 'torchinfo')\n"
        "                           if m in sys.modules]}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "error" not in result["status"] and "skipped" not in result["status"]
    assert result["mods"] == ["torch_lr_finder", "torchinfo"]
