"""`nndoctor watch` (SPEC §8): the sample scripts end to end, the exit paths, the Python API."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

SCRIPTS = os.path.join(ROOT, "sample_scripts")
EVERY = 50  # the default sampling period: a finding's step is right within one period

# script -> (code, first step the bug exists at, where)
BROKEN = {
    "eval_left_on": ("eval-mode-in-training", 101, None),
    "warmup_nan": ("non-finite", 150, None),
    "amp_skipping": ("amp-skipped-steps", 100, None),
    "clip_before_unscale": ("clip-before-unscale", 100, None),
    "lr_per_batch": ("lr-collapsed", 100, None),
    "loss_spike": ("loss-spike", 150, None),
    "dead_relu": ("dead-neurons", 120, "3"),  # the second ReLU, killed by an LR jump at step 120
    "vanishing_sigmoid": ("vanishing-gradient", 0, "0"),  # from the start: the first Linear
}
HEALTHY = ["mlp", "cnn_bn_dropout", "lstm", "transformer", "amp_bf16", "cosine"]


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def watch(*args: str, cwd: str = ROOT, env=None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nndoctor", "watch", *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def watch_json(*args: str, **kwargs):
    proc = watch("--format", "json", *args, **kwargs)
    assert proc.stdout, proc.stderr
    return proc, json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_script_names_its_bug_at_its_step(name):
    code, step, where = BROKEN[name]
    proc, report = watch_json(os.path.join(SCRIPTS, f"{name}.py"))
    found = [f for f in report["findings"] if f["code"] == code]
    assert found, (proc.stderr, [(f["code"], f["message"]) for f in report["findings"]])
    finding = found[0]
    # within a sampling period; dead units within the gap between the scan that last saw them
    # fire and the one that first saw them silent (the scans are paced by time: on a tiny model
    # they skip sampled steps, more or fewer by the machine's speed and load)
    after = finding["evidence"].get("died_after_step")
    period = max(EVERY, finding["evidence"]["step"] - after) if after is not None else EVERY
    assert step <= finding["evidence"]["step"] <= step + period, finding
    assert finding["where"] == where
    assert any(ch.isdigit() for ch in finding["message"])
    assert report["watch"]["steps"] >= step and report["watch"]["every"] == EVERY
    expected_exit = 1 if finding["severity"] == "error" or any(
        f["severity"] == "error" for f in report["findings"]) else 0
    assert proc.returncode == expected_exit, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_script_is_quiet(name):
    proc, report = watch_json(os.path.join(SCRIPTS, f"{name}.py"))
    assert proc.returncode == 0, proc.stderr
    assert report["findings"] == [], [(f["code"], f["message"]) for f in report["findings"]]
    assert report["status"] == "pass"
    losses = report["watch"]["losses"]
    assert len(losses) == report["watch"]["steps"] >= 300 and all(math.isfinite(v) for v in losses)


@pytest.mark.slow
def test_nan_is_localised_and_the_report_lists_the_losses():
    proc, report = watch_json(os.path.join(SCRIPTS, "warmup_nan.py"))
    finding = next(f for f in report["findings"] if f["code"] == "non-finite")
    # The MSE of a finite (huge) output overflows: the loss is where it went inf.
    assert finding["evidence"]["kind"] == "loss" and finding["evidence"]["scope"] == "loss"
    assert finding["evidence"]["reproduced"] is True
    assert any(f["code"] == "exploding-gradient" and f["evidence"]["step"] < finding["evidence"]["step"]
               for f in report["findings"])


@pytest.mark.slow
def test_max_steps_ends_the_script_cleanly(tmp_path):
    proc, report = watch_json("--max-steps", "30", os.path.join(SCRIPTS, "mlp.py"))
    assert proc.returncode == 0, proc.stderr
    assert report["watch"]["steps"] == 30
    assert "final loss" not in proc.stderr  # the script's own end never ran
    assert any("max-steps 30" in n for n in report["notes"])


@pytest.mark.slow
def test_script_arguments_pass_through_untouched(tmp_path):
    script = tmp_path / "args.py"
    script.write_text("import sys\nprint('ARGV', sys.argv[1:], __name__)\n")
    proc = watch(str(script), "--every", "3", "--format", "x", "pos")
    assert proc.returncode == 0, proc.stderr
    assert "ARGV ['--every', '3', '--format', 'x', 'pos'] __main__" in proc.stdout
    assert "no optimizer step" in proc.stdout


@pytest.mark.slow
def test_module_form_runs_with_its_arguments():
    proc, report = watch_json("--max-steps", "20", "-m", "mlp", "ignored-arg", cwd=SCRIPTS)
    assert proc.returncode == 0, proc.stderr
    assert report["watch"]["steps"] == 20 and report["target"] == "-m mlp"


def _train_then(tail: str) -> str:
    return textwrap.dedent("""\
        import torch
        model = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        def train(steps):
            for _ in range(steps):
                opt.zero_grad()
                model(torch.randn(8, 4)).pow(2).mean().backward()
                opt.step()
        """) + textwrap.dedent(tail)


@pytest.mark.slow
def test_a_script_that_raises_shows_its_traceback_first_and_exits_1(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text(_train_then("""\
        train(5)
        raise ValueError("boom at the end")
        """))
    proc = watch(str(script))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):", proc.stderr
    assert lines[-1] == "ValueError: boom at the end"
    assert "runpy" not in proc.stderr and "nndoctor" not in proc.stderr
    assert "watched 5 optimizer steps" in proc.stdout and "the script raised ValueError" in proc.stdout


@pytest.mark.slow
def test_a_missing_script_is_a_usage_error():
    proc = watch("no/such/train.py")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "nndoctor: error: no such script: no/such/train.py"


@pytest.mark.slow
def test_sigint_exits_130_with_the_report(tmp_path):
    script = tmp_path / "forever.py"
    script.write_text(_train_then("""\
        import sys
        train(20)
        print("ready", file=sys.stderr, flush=True)
        while True:
            train(1)
        """))
    process = subprocess.Popen(
        [sys.executable, "-m", "nndoctor", "watch", "--format", "json", str(script)], cwd=ROOT, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stderr.readline().strip() == "ready"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert json.loads(out)["watch"]["steps"] >= 20
    assert "interrupted" in err


@pytest.mark.slow
def test_report_env_var_writes_the_json(tmp_path):
    path = tmp_path / "report.json"
    proc = watch("--max-steps", "10", os.path.join(SCRIPTS, "mlp.py"), env=_env(NNDOCTOR_REPORT=str(path)))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(path.read_text())["watch"]["steps"] == 10


def test_watch_help_does_not_import_torch():
    script = ("import sys\nfrom typer.testing import CliRunner\nimport nndoctor.cli as cli\n"
              "out = CliRunner().invoke(cli.app, ['watch', '--help'])\n"
              "assert out.exit_code == 0 and '--max-steps' in out.output, out.output\n"
              "import nndoctor\nnndoctor.watch, nndoctor.TrainingBug\n"
              "assert 'torch' not in sys.modules\nprint('ok')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert proc.stdout.strip() == "ok", proc.stderr


# ------------------------------------------------------------------ the Python API

def _mlp():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))


def test_api_fail_on_raises_at_the_step_before_its_update():
    import torch

    import nndoctor

    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(32, 8)
    with pytest.raises(nndoctor.TrainingBug) as caught:
        with nndoctor.watch(model, opt, fail_on="error"):
            for step in range(20):
                opt.zero_grad()
                inputs = x if step < 7 else x * math.inf  # a corrupt batch at step 7
                model(inputs).mean().backward()
                opt.step()
    finding = caught.value.finding
    assert finding.code == "non-finite" and finding.evidence["step"] == 7
    assert finding.evidence["kind"] == "input"
    assert finding.evidence["input"] == "args[0]" and finding.evidence["input_nonfinite"] == 32 * 8
    assert "(`args[0]`: 256 of 256)" in finding.message
    from nndoctor.report.codes import CODES

    assert finding.fix == CODES["data-non-finite"].fix  # the data's fix, not a lower LR
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())  # no NaN update applied


def test_api_names_a_loss_whose_every_target_is_ignored():
    """A batch whose every label is ignore_index: cross-entropy's mean over no targets is 0/0
    (pytorch#70348), the model's output and gradients finite; found at its step, placed in the
    loss (computed outside the model), with the loss's fix."""
    import torch

    import nndoctor
    from nndoctor.checks.nan import LOSS_FIX

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    criterion = torch.nn.CrossEntropyLoss()
    with nndoctor.watch(model, opt) as doc:
        for step in range(20):
            opt.zero_grad()
            labels = torch.full_like(y, -100) if step == 12 else y
            criterion(model(x), labels).backward()
            opt.step()
    (finding,) = [f for f in doc.report.findings if f.code == "non-finite"]
    assert finding.evidence["step"] == 12 and finding.evidence["kind"] == "loss"
    assert finding.evidence["loss_op"] == "nll_loss" and finding.where is None
    assert "ignore_index (-100)" in finding.message and "gradients are all zero" in finding.message
    assert finding.fix == LOSS_FIX


def test_api_localises_a_forward_nan_to_module_and_op_and_restores_the_user_state():
    import torch

    import nndoctor

    class LogNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _mlp()
            self.norm = torch.nn.BatchNorm1d(1)

        def forward(self, x):
            return torch.log(self.norm(self.body(x)))  # log of negative values: NaN

    torch.manual_seed(0)
    model = LogNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: nothing else changes
    x = torch.randn(32, 8)
    with nndoctor.watch(model, opt) as doc:
        opt.zero_grad()
        model(x).mean().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        stats = model.norm.running_mean.clone()
        rng = torch.get_rng_state()
        opt.step()
    finding = next(f for f in doc.report.findings if f.code == "non-finite")
    assert finding.evidence["kind"] == "forward" and finding.evidence["op"] == "log"
    assert finding.evidence["step"] == 0
    assert all(torch.equal(g, p.grad, ) or (g.isnan() == p.grad.isnan()).all()
               for g, p in zip(grads, model.parameters()))
    assert torch.equal(stats, model.norm.running_mean)
    assert torch.equal(rng, torch.get_rng_state())


def test_api_logged_validation_losses_feed_overfitting():
    """A validation loss that turns and climbs back is overfitting; one that drifts up near
    its floor (the zoo's DistilBERT: 0.552, then 0.028 -> 0.050, 4% of its gain given back)
    is not, as in `fit`."""
    import torch

    import nndoctor

    def train(val_losses):
        model = _mlp()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        x, y = torch.randn(64, 8), torch.randn(64, 1)
        with nndoctor.watch(model, opt) as doc:
            for step in range(200):
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(x), y).backward()
                opt.step()
                if step % 40 == 39:
                    doc.log(val_loss=val_losses[step // 40])
        return doc

    doc = train([1.0, 0.8, 0.9, 1.1, 1.3])
    found = [f for f in doc.report.findings if f.code == "overfitting"]
    assert found and found[0].evidence["step"] == 79, [f.code for f in doc.report.findings]
    assert doc.report.sections["watch"]["steps"] == 200
    assert not train([0.552, 0.0282, 0.040, 0.0453, 0.0499]).report.findings


def test_api_not_in_optimizer_and_grad_accumulation_counts_one_step():
    import torch

    import nndoctor

    model = _mlp()
    opt = torch.optim.SGD(model[0].parameters(), lr=0.01)  # the head is left out
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    with nndoctor.watch(model, opt) as doc:
        for _ in range(6):
            opt.zero_grad()
            for _ in range(4):  # 4 micro-batches per step
                (torch.nn.functional.mse_loss(model(x), y) / 4).backward()
            opt.step()
    report = doc.report
    assert report.sections["watch"]["steps"] == 6
    assert {f.where for f in report.findings if f.code == "not-in-optimizer"} == {"2.weight", "2.bias"}


def test_probe_layer_rms_is_the_gradients_rms_and_dead_units_have_the_step_they_died_by(monkeypatch):
    import torch

    import nndoctor
    import nndoctor.probes.live as live
    from nndoctor.probes.activations import MIN_OBSERVATIONS

    monkeypatch.setattr(live, "SCAN_BUDGET", math.inf)  # scan every sampled step, whatever it costs

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),
                                torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(128, 8), torch.randn(128, 1)
    seen = {}
    with nndoctor.watch(model, opt, every=10) as doc:
        for step in range(80):
            if step == 25:
                with torch.no_grad():
                    model[2].bias.fill_(-100.0)  # every unit of the second ReLU dies here
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            if step == 10:
                seen = {name: float(model[i].weight.grad.norm()) / model[i].weight.numel() ** 0.5
                        for name, i in (("0", 0), ("2", 2), ("4", 4))}
            opt.step()
    rms = dict(doc.history.layer_rms[10])
    assert rms.keys() == seen.keys()
    assert all(abs(rms[k] - seen[k]) <= 1e-6 * max(seen[k], 1e-12) for k in seen)
    found = [f for f in doc.report.findings if f.code == "dead-neurons"]
    assert [f.where for f in found] == ["3"], [(f.code, f.where) for f in doc.report.findings]
    # silent from the sampled step 30 on; 128 observations a scan: dead once 3 scans (384 >= 299) say so
    assert found[0].evidence["step"] == 30 and found[0].evidence["judged_at_step"] == 50
    assert found[0].evidence["min_observations"] == MIN_OBSERVATIONS
    assert found[0].evidence["dead_units"] == 32 and found[0].evidence["died_during_training"] >= 30


def test_a_spike_from_a_median_of_exactly_zero_does_not_break_the_run():
    from nndoctor.live.judge import SPIKE_WINDOW, History, Judge

    history = History(every=50)
    judge = Judge(history)
    found = []
    for step in range(SPIKE_WINDOW + 30):
        history.losses.append(2.0 if step < 10 else (0.0 if step < SPIKE_WINDOW + 10 else 1.5))
        history.grad_norms.append(1.0)
        history.lrs.append(0.1)
        history.skipped.append(False)
        found += judge.on_step(step)
    spikes = [f for f in found if f.code == "loss-spike"]
    assert spikes and spikes[0].evidence["median"] == 0.0 and "x;" not in spikes[0].message


def test_watching_leaves_the_users_run_bit_for_bit_unchanged():
    """The sampled steps' activation scan re-runs the forward: RNG, BatchNorm statistics and
    every buffer are put back, so a watched run ends with the very weights of an unwatched one."""
    import torch

    import nndoctor

    def train(watched: bool):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                    torch.nn.Dropout(0.3), torch.nn.Linear(32, 1))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        with (nndoctor.watch(model, opt, every=5) if watched else contextlib.nullcontext()):
            for _ in range(40):
                x = torch.randn(64, 8)
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True)).backward()
                opt.step()
        return [t.clone() for t in list(model.parameters()) + list(model.buffers())], torch.randn(3)

    bare, watched = train(False), train(True)
    assert all(torch.equal(a, b) for a, b in zip(bare[0], watched[0]))
    assert torch.equal(bare[1], watched[1])  # the RNG stream goes on where it would have


def test_a_model_copied_or_saved_mid_run_does_not_take_the_watcher_along():
    """Scripts copy their model mid-run (the best one so far, SWA's AveragedModel) and save it
    whole: the copy gets no hook of ours and the pickle names no nndoctor (it loads without it);
    the watched model keeps its hook, and a subclass with its own `__getstate__` copies it as a
    hook that does nothing."""
    import copy
    import io

    import torch
    from torch.optim.swa_utils import AveragedModel

    import nndoctor

    class OwnState(torch.nn.Sequential):
        def __getstate__(self):
            return dict(self.__dict__)

    original_getstate = torch.nn.Module.__getstate__
    for model in (_mlp(), OwnState(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(32, 8)
        with nndoctor.watch(model, opt, every=5) as doc:
            for step in range(30):
                opt.zero_grad()
                model(x).pow(2).mean().backward()
                opt.step()
                if step == 12:
                    best, swa, buffer = copy.deepcopy(model), AveragedModel(model), io.BytesIO()
                    if type(model) is torch.nn.Sequential:  # a local class does not pickle
                        torch.save(model, buffer)
                if step > 12:
                    swa.update_parameters(model)
                    best(x), swa(x)
        assert len(best._forward_pre_hooks) == (1 if isinstance(model, OwnState) else 0)
        if type(model) is torch.nn.Sequential:
            assert b"nndoctor" not in buffer.getvalue()
            buffer.seek(0)
            assert torch.equal(torch.load(buffer, weights_only=False)(x), best(x))
        assert doc.report is not None
        assert not model._forward_pre_hooks  # removed at the end, from the watched model
    assert torch.nn.Module.__getstate__ is original_getstate


@pytest.mark.parametrize("in_place", [False, True])
def test_a_compiled_model_trains_as_unwatched_and_its_nan_is_placed_in_the_original(in_place):
    """torch.compile traces the module hooks inside the compiled module into its graph: the
    watcher's do nothing there, it keeps the inputs of the compiled module (whose hooks run
    eagerly) and re-runs the original eagerly to place a NaN. backend="eager": dynamo's tracing,
    without a C++ compiler."""
    import torch

    import nndoctor

    class LogHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _mlp()
            self.register_buffer("shift", torch.zeros(()))

        def forward(self, x):
            return torch.log(torch.nn.functional.softplus(self.body(x)) - self.shift)

    def train(watched: bool, poison_at=None):
        torch.manual_seed(0)
        model = LogHead()
        compiled = model if in_place else torch.compile(model, backend="eager")
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        losses = []
        with (nndoctor.watch(every=10) if watched else contextlib.nullcontext()) as doc:
            if in_place:  # module.compile(), as a script under `nndoctor watch` calls it: the
                model.compile(backend="eager")  # module's own hooks run in the graph too
            for step in range(60):
                if step == poison_at:
                    model.shift.fill_(1e6)  # log of a negative number from here on
                x = torch.randn(32, 8)
                opt.zero_grad()
                loss = compiled(x).pow(2).mean()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                if not math.isfinite(losses[-1]):
                    break
        return losses, doc

    bare, _ = train(False)
    watched, doc = train(True)
    assert watched == bare
    assert not [f for f in doc.report.findings if f.severity in ("warning", "error")]
    _, doc = train(True, poison_at=45)
    finding = next(f for f in doc.report.findings if f.code == "non-finite")
    assert finding.evidence["step"] == 45
    assert finding.evidence["kind"] == "forward" and finding.evidence["op"] in ("log", "sub")


@pytest.mark.parametrize("how", ["torch.compile", "in place"])
def test_a_compiled_models_inner_layers_are_judged_from_the_original(how):
    """Under torch.compile the hooks of the modules inside the compiled one do nothing (traced
    into its graph): what they would see is read from the original module. Its Dropout and
    BatchNorm left in eval mode after a validation are found, named; its layers' gradients are
    compared (a deep sigmoid MLP's first layer vanishing). A functional dropout in a compiled
    model in eval mode is not wrapped (a new global each sampled step would recompile the
    graph; once, dynamo traced the wrapper and the user's run raised): no crash, nothing found.
    `module.compile()` (in place) runs even the module's own hooks in the graph: the watcher
    wraps its compiled call, whether it was compiled before the watch or during it."""
    import torch

    import nndoctor
    import nndoctor.probes.live as live

    def compiled(module):
        if how == "in place":
            module.compile(backend="eager")
            return module
        return torch.compile(module, backend="eager")

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                torch.nn.Dropout(0.2), torch.nn.Linear(32, 3))
    report = _train_leaving_eval_on(compiled(model), (16, 8), steps=60, eval_after=24)
    found = [f for f in report.findings if f.code == "eval-mode-in-training"]
    assert len(found) == 1 and found[0].evidence["step"] == 25  # the first step in eval mode
    assert found[0].evidence["modules"] == ["1", "3"]

    torch.manual_seed(0)
    report = _train_leaving_eval_on(compiled(_functional_dropout_net("self.training")),
                                    (16, 8), steps=40, eval_after=14)
    assert not [f for f in report.findings if f.severity in ("warning", "error")]

    torch.manual_seed(0)
    layers = [torch.nn.Linear(20, 64), torch.nn.Sigmoid()]
    for _ in range(8):
        layers += [torch.nn.Linear(64, 64), torch.nn.Sigmoid()]
    deep = torch.nn.Sequential(*layers, torch.nn.Linear(64, 4))
    opt = torch.optim.SGD(deep.parameters(), lr=0.1, momentum=0.9)
    with nndoctor.watch(every=10) as doc:
        run = compiled(deep)  # within the watch: its compile() is seen
        for _ in range(40):
            x = torch.randn(64, 20)
            loss = torch.nn.functional.cross_entropy(run(x), (x.sum(1) > 0).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    vanishing = next(f for f in doc.report.findings if f.code == "vanishing-gradient")
    assert vanishing.where == "0"
    assert "_compiled_call_impl" not in deep.__dict__ or not isinstance(
        deep._compiled_call_impl, live._CompiledEntry)  # put back


def test_a_model_compiled_in_place_before_the_watch_is_said_to_be_unseen():
    """module.compile() before nndoctor.watch() with no model: every hook of it runs in its
    graph, so the watcher never sees it; the report says so, and how to hand it over."""
    import torch

    import nndoctor

    torch.manual_seed(0)
    model = _mlp()
    model.compile(backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with nndoctor.watch(every=10) as doc:
        for _ in range(30):
            opt.zero_grad()
            model(torch.randn(32, 8)).pow(2).mean().backward()
            opt.step()
    assert any(n.startswith("the model was not seen") and "nndoctor.watch(model=...)" in n for n in doc.report.notes)


def test_a_loop_calling_autograd_directly_gets_no_false_non_finite():
    """torch.autograd.backward(loss) is seen as loss.backward() is; a loop on torch.autograd.grad
    shows no loss (a note says so) and is not taken for a NaN loss, while a NaN gradient there is
    still found."""
    import torch

    import nndoctor

    def train(how: str, poison_at=None):
        model = _mlp()
        params = list(model.parameters())
        opt = torch.optim.SGD(params, lr=0.01)
        with nndoctor.watch(every=10) as doc:
            for step in range(40):
                x = torch.randn(32, 8) * (math.inf if step == poison_at else 1.0)
                loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
                opt.zero_grad()
                if how == "backward":
                    torch.autograd.backward(loss)
                else:
                    for p, g in zip(params, torch.autograd.grad(loss, params)):
                        p.grad = g
                opt.step()
        return doc

    doc = train("backward")
    assert not doc.report.findings and len(doc.history.losses) == 40
    assert all(math.isfinite(v) for v in doc.history.losses)
    doc = train("grad")
    assert not doc.report.findings
    assert any("the loss was not seen on 40 of 40 steps" in n for n in doc.report.notes)
    # seen at the next step that reads the gradient norm (paced: no loss tells of it sooner)
    finding = next(f for f in train("grad", poison_at=25).report.findings if f.code == "non-finite")
    assert finding.evidence["step"] >= 25


def _train_leaving_eval_on(model, shape: tuple, steps: int, eval_after: int, after_step=None):
    """Adam on the sign of a random batch's sum, watched at period 10; after step `eval_after`
    a validation (model.eval(), a forward without gradient) whose mode is never undone;
    `after_step()` after every step. The watch's report."""
    import torch
    import torch.nn.functional as F

    import nndoctor

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with nndoctor.watch(model, opt, every=10) as doc:
        for step in range(steps):
            x = torch.randn(*shape)
            loss = F.cross_entropy(model(x), (x.flatten(1).sum(1) > 0).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
            if step == eval_after:
                model.eval()  # validation, never undone
                with torch.no_grad():
                    model(x)
    return doc.report


def test_an_lstm_with_dropout_between_layers_left_in_eval_mode_is_found():
    """nn.LSTM(num_layers=2, dropout=0.2) drops out between its layers in train mode only: left
    in eval mode after a validation it is eval-mode-in-training, named; a 1-layer LSTM without
    dropout computes the same in either mode: nothing to find."""
    import torch

    class Tagger(torch.nn.Module):
        def __init__(self, layers):
            super().__init__()
            self.lstm = torch.nn.LSTM(8, 16, num_layers=layers, dropout=0.2 if layers > 1 else 0.0,
                                      batch_first=True)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    for layers, expected in ((2, ["eval-mode-in-training"]), (1, [])):
        torch.manual_seed(0)
        report = _train_leaving_eval_on(Tagger(layers), (16, 5, 8), steps=120, eval_after=40)
        found = [f for f in report.findings if f.code == "eval-mode-in-training"]
        assert [f.code for f in found] == expected
        if found:
            assert "lstm" in found[0].message


def _functional_dropout_net(mode: str):
    """Dropout as Hugging Face's BART/Whisper layers and timm's heads write it:
    F.dropout(x, p, training=self.training) in the forward, no nn.Dropout module; and, as a
    control, the same with the rate passed alone (always on) or 0 (nothing to turn off)."""
    import torch
    import torch.nn.functional as F

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 32)

        def forward(self, x):
            h = F.relu(self.fc(x))
            if mode == "sdpa":  # attention dropout as HF's attention modules pass it
                self.dropout = 0.1
                q = h.view(len(h), 4, 8)
                return F.scaled_dot_product_attention(q, q, q, dropout_p=self.dropout if self.training else 0.0
                                                      ).reshape(len(h), 32)
            if mode == "self.training":
                return F.dropout(h, 0.2, training=self.training)
            return F.dropout(h, 0.2) if mode == "always" else F.dropout(h, 0.0, self.training)

    return torch.nn.Sequential(Block(), torch.nn.Linear(32, 3))


@pytest.mark.parametrize("mode, found", [("self.training", True), ("sdpa", True), ("always", False),
                                         ("rate 0", False)])
def test_a_functional_dropout_turned_off_by_eval_mode_is_found(mode, found):
    """Left in eval mode after a validation, F.dropout(training=self.training) is off: found at
    the next sampled step, named by the module whose forward calls it; a dropout that eval mode
    does not change (always on, or rate 0) is nothing to find. F is put back after each step."""
    import torch
    import torch.nn.functional as F

    original = F.dropout

    def put_back():
        assert F.dropout is original

    torch.manual_seed(0)
    report = _train_leaving_eval_on(_functional_dropout_net(mode), (16, 8), steps=60, eval_after=24,
                                    after_step=put_back)
    codes = [f for f in report.findings if f.code == "eval-mode-in-training"]
    assert bool(codes) == found
    if found:
        assert codes[0].evidence["step"] == 30  # the first sampled step in eval mode
        op = "scaled_dot_product_attention" if mode == "sdpa" else "dropout"
        assert codes[0].evidence["modules"] == [f"0:{op}"]
        assert f"F.{op} in `0`" in codes[0].message


def test_a_healthy_functional_dropout_loop_never_wraps_F():
    """A correct train/eval toggle: the functional dropouts are never wrapped (the wrapping
    happens only in a run already in eval mode after training), nothing found."""
    import torch
    import torch.nn.functional as F

    import nndoctor

    original = F.dropout
    calls = []
    torch.manual_seed(0)
    model = _functional_dropout_net("self.training")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with nndoctor.watch(model, opt, every=10) as doc:
        for step in range(60):
            x = torch.randn(16, 8)
            calls.append(F.dropout is original)
            loss = F.cross_entropy(model(x), (x.sum(1) > 0).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 20 == 19:
                model.eval()
                with torch.no_grad():
                    model(x)
                model.train()
    assert all(calls) and not doc.report.findings


@pytest.mark.slow
@pytest.mark.parametrize("left_on", [True, False])
def test_bart_left_in_eval_mode_is_found_through_its_functional_dropout(left_on):
    """A real architecture with no nn.Dropout module: transformers' BART drops out with
    nn.functional.dropout(..., training=self.training) in its layers (config dropout 0.1, the
    default). Validation's model.eval() never undone is found, named by those layers; the
    correct toggle is quiet."""
    transformers = pytest.importorskip("transformers")
    import torch

    import nndoctor
    from nndoctor.probes.live import mode_dependent

    torch.manual_seed(0)
    config = transformers.BartConfig(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, max_position_embeddings=32)
    model = transformers.BartForConditionalGeneration(config)
    assert not any(mode_dependent(m) for m in model.modules())  # nothing a module check could see
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(3, 64, (8, 12), generator=torch.Generator().manual_seed(0))
    model.train()
    with nndoctor.watch(model, opt, every=10) as doc:
        for step in range(40):
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step == 14:
                model.eval()
                with torch.no_grad():
                    model(input_ids=ids, labels=ids)
                if not left_on:
                    model.train()
    # nothing else either: its layer-0 q_proj, tiny under near-uniform attention, is not
    # vanishing-gradient's first layer (compared_layers)
    assert [f.code for f in doc.report.findings] == (["eval-mode-in-training"] if left_on else [])
    found = doc.report.findings
    if left_on:
        assert found[0].evidence["step"] == 20
        assert "model.encoder.layers.0:dropout" in found[0].evidence["modules"]


def test_multihead_attention_dropout_left_in_eval_mode_is_found():
    """nn.MultiheadAttention(dropout=0.1) drops attention weights in train mode only."""
    import torch

    class Attend(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(8, 2, dropout=0.1, batch_first=True)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.attn(x, x, x)[0].mean(1))

    torch.manual_seed(0)
    report = _train_leaving_eval_on(Attend(), (16, 4, 8), steps=60, eval_after=24)
    (finding,) = [f for f in report.findings if f.code == "eval-mode-in-training"]
    assert finding.evidence["modules"] == ["attn"]


def test_a_closure_steps_loss_is_its_first_evaluation_at_its_own_step():
    """optimizer.step(closure) (LBFGS, positionally or as closure=): the forward and backward run
    inside step(), so the step is measured after it, on its first closure's loss (LBFGS's line
    search evaluates it again at other weights). Step 0 has a loss, every loss is the loss
    at the weights the step began from."""
    import torch

    import nndoctor

    torch.manual_seed(0)
    x = torch.randn(128, 8)
    y = x[:, :2].sum(1, keepdim=True).tanh()
    for keyword in (False, True):
        model = _mlp()
        opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
        before = []

        def closure(model=model, opt=opt):
            opt.zero_grad()
            loss = (model(x) - y).pow(2).mean()
            loss.backward()
            return loss

        with nndoctor.watch(every=3) as doc:
            for _ in range(6):
                with torch.no_grad():
                    before.append(float((model(x) - y).pow(2).mean()))
                opt.step(closure=closure) if keyword else opt.step(closure)
        assert doc.history.losses == pytest.approx(before, rel=1e-5)
        assert not doc.report.findings
        assert not any("not seen" in n for n in doc.report.notes)


@pytest.mark.parametrize("optimizer", ["lbfgs", "sgd"])
def test_a_closure_steps_nan_is_caught_before_its_update(optimizer):
    """A NaN made inside step(closure) is measured when the closure returns, before the
    optimizer applies its NaN gradient: with fail_on the weights are still finite, and the step
    is placed in the forward's op (after the update it read as an overflowed weight)."""
    import torch

    import nndoctor

    class LogAt(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _mlp()

        def forward(self, x, shift):
            return torch.sqrt(self.body(x).abs() + 1 - shift)  # sqrt of a negative: NaN, its gradient too

    torch.manual_seed(0)
    model = LogAt()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3) if optimizer == "lbfgs" \
        else torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(32, 8)
    with pytest.raises(nndoctor.TrainingBug) as caught:
        with nndoctor.watch(model, opt, fail_on="error"):
            for step in range(10):
                def closure(shift=100.0 if step == 6 else 0.0):
                    opt.zero_grad()
                    loss = model(x, shift).mean()
                    loss.backward()
                    return loss
                opt.step(closure)
    finding = caught.value.finding
    assert finding.code == "non-finite" and finding.evidence["step"] == 6
    assert finding.evidence["kind"] == "forward" and finding.evidence["op"] == "sqrt"
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_a_gan_is_not_loss_not_decreasing_but_two_optimizers_on_one_loss_still_are():
    """A GAN's discriminator loss hovers near its equilibrium: with another optimizer stepping on
    a loss of its own the loss trend is not judged (a note says why). Two optimizers on one
    loss (dense and embedding parameters) are one objective: a loss that does not fall is found."""
    import torch

    import nndoctor

    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    D = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.LeakyReLU(0.2), torch.nn.Linear(32, 1))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = torch.nn.BCEWithLogitsLoss()
    with nndoctor.watch() as doc:
        for _ in range(250):
            real, fake = torch.randn(64, 2) * 0.5 + 2, G(torch.randn(64, 4))
            opt_d.zero_grad()
            (bce(D(real), torch.ones(64, 1)) + bce(D(fake.detach()), torch.zeros(64, 1))).backward()
            opt_d.step()
            opt_g.zero_grad()
            bce(D(fake), torch.ones(64, 1)).backward()
            opt_g.step()
    assert not doc.report.findings
    assert any(n.startswith("loss-not-decreasing: not judged") for n in doc.report.notes)

    model = _mlp()
    first, second = list(model.parameters())[:2], list(model.parameters())[2:]
    opts = [torch.optim.SGD(first, lr=0.0), torch.optim.SGD(second, lr=0.0)]  # lr 0: no progress
    x = torch.randn(64, 8)
    with nndoctor.watch() as doc:
        for _ in range(250):
            for opt in opts:
                opt.zero_grad()
            (model(x) - x.sum(1, keepdim=True)).pow(2).mean().backward()
            for opt in opts:
                opt.step()
    assert [f.code for f in doc.report.findings] == ["loss-not-decreasing"]


def test_a_resumed_run_is_not_loss_not_decreasing_but_a_fresh_one_at_chance_is():
    """A run resumed from a checkpoint (the optimizer's state loaded) starts where it had got
    to: its loss falls by a few percent in 300 steps, healthy (a note says loss-not-decreasing
    was not judged). A fresh run on labels it cannot learn is still found, on Adagrad too,
    whose state exists from __init__ at step 0."""
    import torch
    import torch.nn.functional as F

    import nndoctor

    torch.manual_seed(0)
    W = torch.randn(8, 4)

    def batch(learnable=True):
        x = torch.randn(64, 8)
        return x, (x @ W).argmax(1) if learnable else torch.randint(0, 4, (64,))

    def train(model, opt, steps, learnable=True):
        for _ in range(steps):
            x, y = batch(learnable)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train(model, opt, 2000)
    checkpoint = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    model.load_state_dict(checkpoint["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.load_state_dict(checkpoint["optimizer"])
    with nndoctor.watch(model, opt) as doc:
        train(model, opt, 300)
    assert not doc.report.findings and doc.history.resumed
    assert any(n.startswith("loss-not-decreasing: not judged: the run resumed") for n in doc.report.notes)

    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    opt = torch.optim.Adagrad(model.parameters(), lr=1e-3)
    with nndoctor.watch(model, opt) as doc:
        train(model, opt, 300, learnable=False)
    assert not doc.history.resumed
    assert [f.code for f in doc.report.findings] == ["loss-not-decreasing"]


@pytest.mark.parametrize("every", [50, 10])
def test_heads_trained_on_alternate_steps_are_not_no_gradient_but_a_detached_one_is(every):
    """A multi-task loop alternating its heads by step never trains head 1 on a sampled step
    (all even): the steps off the sampled ones that look again find its gradient. A head cut
    off by .detach() has none on any step."""
    import torch

    import nndoctor

    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU())
    heads = torch.nn.ModuleList([torch.nn.Linear(32, 1), torch.nn.Linear(32, 1), torch.nn.Linear(32, 1)])
    model = torch.nn.ModuleDict({"body": body, "heads": heads})
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with nndoctor.watch(model, opt, every=every) as doc:
        for step in range(300):
            x = torch.randn(32, 8)
            h = body(x)
            out = heads[step % 2](h) + 0 * heads[2](h.detach()).detach()  # head 2: never trained
            opt.zero_grad()
            (out - x.sum(1, keepdim=True)).pow(2).mean().backward()
            opt.step()
    found = {f.where for f in doc.report.findings if f.code == "no-gradient"}
    assert found == {"heads.2.weight", "heads.2.bias"}


def test_judging_a_range_of_steps_finds_what_judging_each_step_finds():
    """Watcher batches the judges (Judge.on_steps, with the judges that cannot fire screened out
    per range): the same findings, in the same order, as Judge.on_step on every step."""
    from nndoctor.live.judge import History, Judge

    def history() -> History:
        h = History(every=10)
        for step in range(400):
            h.losses.append(2.0 - step / 400 + (5.0 if step in (160, 165, 170) else 0.0))
            h.grad_norms.append(2e3 if step == 90 else (None if step % 3 else 1.0))
            h.lrs.append(0.1 if step < 200 else 1e-9)  # collapsed from step 200
            h.skipped.append(step < 3 or (250 <= step < 300 and step % 2 == 0))
        h.clip_scaled, h.clip_scale = [120, 121], 65536.0
        h.eval_modules[130] = ["1"]
        return h

    each = Judge(history())
    one_by_one = [f for step in range(400) for f in each.on_step(step)]
    ranged = Judge(history())
    batched = [f for first in range(0, 400, 7) for f in ranged.on_steps(first, min(first + 6, 399))]
    codes = [(f.code, f.evidence["step"]) for f in one_by_one]
    assert {c for c, _ in codes} >= {"loss-spike", "exploding-gradient", "lr-collapsed", "clip-before-unscale",
                                     "eval-mode-in-training", "amp-skipped-steps"}, codes
    assert [(f.code, f.where, f.message) for f in batched] == [(f.code, f.where, f.message) for f in one_by_one]


def test_judging_a_healthy_range_screens_spikes_as_judging_each_step_does():
    """The common range (no sampled step, nothing but the spike judge can fire) takes a short path
    (Judge._spike_range): the same spike finding at the same step as on_step on every step, with
    non-finite losses on and off the baseline's refresh steps."""
    from nndoctor.live.judge import History, Judge

    def history() -> History:
        h = History(every=1000)
        for step in range(400):
            loss = 2.0 - step / 400 + (5.0 if step in (231, 236, 240) else 0.0)
            h.losses.append(math.nan if step in (120, 125) else math.inf if step == 130 else loss)
            h.grad_norms.append(None)
            h.lrs.append(0.1)
            h.skipped.append(False)
        return h

    each = Judge(history())
    one_by_one = [f for step in range(400) for f in each.on_step(step)]
    ranged = Judge(history())
    batched = [f for first in range(0, 400, 10) for f in ranged.on_steps(first, min(first + 9, 399))]
    assert [(f.code, f.evidence["step"]) for f in one_by_one] == [("loss-spike", 231)]
    assert [(f.code, f.where, f.message) for f in batched] == [(f.code, f.where, f.message) for f in one_by_one]


def test_rng_is_kept_per_step_only_when_the_step_draws_random_numbers():
    """A model without Dropout keeps no RNG state per step (the sampled steps see none drawn); one
    with Dropout does, and its non-finite step (not a sampled one) is still re-run and localised."""
    import torch

    import nndoctor

    class Net(torch.nn.Module):
        def __init__(self, dropout: bool):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.5) if dropout
                                            else torch.nn.Identity(), torch.nn.Linear(16, 1))
            self.poison = False

        def forward(self, x):
            out = self.body(x)
            return torch.log(out - 1e3) if self.poison else out  # log of negatives: NaN

    for dropout in (False, True):
        torch.manual_seed(0)
        model = Net(dropout)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(32, 8)
        with nndoctor.watch(model, opt, every=5) as doc:
            for step in range(8):
                model.poison = step == 7
                opt.zero_grad()
                model(x).mean().backward()
                opt.step()
                if step == 6:
                    assert doc.probe._rng_used is dropout
        finding = next(f for f in doc.report.findings if f.code == "non-finite")
        assert finding.evidence["step"] == 7 and finding.evidence["kind"] == "forward"
        assert finding.evidence["op"] == "log"


def test_a_short_run_says_dead_neurons_had_not_enough_observations():
    import torch

    import nndoctor

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    with nndoctor.watch(model, opt) as doc:  # 20 steps at every=50: one scan, 32 observations a unit
        for _ in range(20):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    report = doc.report
    assert not report.findings
    assert any(n.startswith("dead-neurons: not enough observations for a verdict on `1`") for n in report.notes)


def _ddp_rank(rank: int, port: int, out: str, watched: bool, how: str) -> None:
    """One rank of a 2-rank gloo DDP run (BatchNorm: DDP broadcasts its buffers at each forward),
    or FSDP2 (`fully_shard`: DTensor parameters and gradients), whose rank 1 gets a NaN in its
    batch at step 25; writes its losses and findings to `out`."""
    import torch
    import torch.distributed as dist

    import nndoctor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    inner = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 3))
    if how == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in (inner[0], inner[3]):
            fully_shard(layer)
        model = fully_shard(inner)
    else:
        model = torch.nn.parallel.DistributedDataParallel(inner)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(rank)
    losses = []
    with (nndoctor.watch(every=5) if watched else contextlib.nullcontext()) as doc:
        for step in range(40):
            x = torch.randn(16, 8, generator=g)
            if step == 25 and rank == 1:
                x[0, 0] = float("nan")
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), (x.sum(1) > 0).long())
            loss.backward()
            opt.step()
            losses.append(loss.item())
    findings = [{"code": f.code, **{k: f.evidence.get(k) for k in ("step", "kind", "rank", "world_size")}}
                for f in doc.report.findings] if watched else []
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"losses": losses, "findings": findings}, f)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ddp", "fsdp"])
def test_a_ddp_run_is_not_desynchronised_and_each_rank_says_what_it_saw(tmp_path, how):
    """Under DDP the watcher's re-runs (the activation scan, the NaN tracer) run the module inside
    DDP, on this rank alone: through DDP they would broadcast buffers and all-reduce gradients on
    one rank only, pairing with another rank's next step (the run desynchronised, then raised at
    its end). The rank whose batch holds the NaN names it; the other, whose own step is finite,
    says its gradients came through the all-reduce. Each rank trains exactly as unwatched. Under
    FSDP2 nothing is re-run (the forward gathers shards) and the gradients are read locally (a
    DTensor's `.tolist()` raised in the user's run): the rank sees the NaN at its step, or as
    NaN weights at the next when that step's norm was not read (paced), and says either way
    that it may have come from another rank."""
    import socket

    import torch.multiprocessing as mp

    runs = {}
    for watched in (False, True):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = str(tmp_path / f"rank_{watched}")
        mp.spawn(_ddp_rank, args=(port, out, watched, how), nprocs=2)
        runs[watched] = [json.load(open(f"{out}.{rank}")) for rank in range(2)]
    for rank in range(2):
        # as text: the losses are NaN from step 25 on (Adam on NaN gradients), and NaN != NaN
        assert json.dumps(runs[True][rank]["losses"]) == json.dumps(runs[False][rank]["losses"])
    zero, one = (next(f for f in run["findings"] if f["code"] == "non-finite") for run in runs[True])
    assert one["step"] == 25 and one["kind"] == "input"
    if how == "ddp":
        assert zero == {"code": "non-finite", "step": 25, "kind": "all-reduce", "rank": 0, "world_size": 2}
    else:
        assert (zero["step"], zero["kind"]) in ((25, "all-reduce"), (26, "parameter"))
        assert (zero["rank"], zero["world_size"]) == (0, 2)
