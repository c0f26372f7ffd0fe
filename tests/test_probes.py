"""The probes on their own: one tracer, modes kept, and probes that need no Session."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nndoctor.engine.session import split_batch
from nndoctor.probes.activations import scan_activations
from nndoctor.probes.forward import probe_batch, record_forward
from nndoctor.probes.tracer import Tracer, modes_kept
from nndoctor.probes.train_run import RunInputs, record_run


class _Paths(Tracer):
    def __init__(self, model):
        super().__init__(model)
        self.seen = []

    def on_call(self, func, args, kwargs, out, module_path):
        if func in (F.relu, torch.relu, torch.Tensor.relu):
            self.seen.append(module_path)


class _Shared(nn.Module):
    """One ReLU module reused twice, a functional relu between, then a relu in the root."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(3, 3))
        self.act = nn.ReLU()

    def forward(self, x):
        x = self.act(self.inner(x))
        x = F.relu(self.inner(x))
        return torch.relu(self.act(x))


def test_the_tracer_names_the_innermost_module_of_every_call_with_a_reused_module():
    model = _Shared()
    tracer = _Paths(model).install()
    try:
        with tracer:
            model(torch.randn(2, 3))
    finally:
        tracer.remove()
    # nn.ReLU calls F.relu inside itself; the root's own calls are the root's ("")
    assert tracer.seen == ["act", "", "act", ""]
    assert tracer.stack == [] and tracer.handles == []


def test_the_tracer_stack_unwinds_when_a_forward_raises():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Linear(2, 2), Boom())
    tracer = Tracer(model).install()
    try:
        with pytest.raises(RuntimeError), tracer:
            model(torch.randn(1, 2))
        assert tracer.stack == []  # always_call post-hooks popped both
        with tracer:
            assert tracer.module_path is None  # outside the model: the loss's
    finally:
        tracer.remove()
    assert not model[0]._forward_pre_hooks and not model[0]._forward_hooks


def test_modes_kept_restores_every_submodule_even_on_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))
    model[1].eval()
    with pytest.raises(ValueError), modes_kept(model):
        model.train()
        raise ValueError
    assert [m.training for m in model.modules()] == [True, True, False, True]


def test_the_probes_run_on_plain_objects_without_a_session():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    batch = split_batch((x, y))
    model.eval()

    record = record_forward(model, batch)
    assert record.logits.shape == (16, 3) and [p for p, _ in record.signal] == ["0", "2"]
    probe, result = probe_batch(model, batch, 1e-6)
    assert result[1] == 0.0 and probe.handles == []  # an MLP mixes no samples

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    run = record_run(RunInputs(model, optimizer, batch, lambda b: F.cross_entropy(model(*b.args), b.target)), 20)
    assert run.steps_done == 20 and run.losses[-1] < run.losses[0] and run.nonfinite is None
    assert scan_activations(model, [x]).layers[0].where == "1"
    assert not model.training and all(not m._forward_hooks for m in model.modules())
