"""SPEC §1/§6: the Session leaves the user's model, optimizer and RNGs bit-identical."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from nndoctor.engine.runner import run_checks
from nndoctor.engine.session import Session, resolve_device, seed_everything, split_batch
from nndoctor.errors import DataError
from nndoctor.target import Setup

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
if FIXTURES not in sys.path:
    sys.path.insert(0, FIXTURES)
import nd_fake_check  # noqa: E402


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.frozen = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.features(x).mean(dim=(2, 3))
        return self.head(self.drop(self.frozen(h)))


def make_setup(optimizer="adam"):
    torch.manual_seed(0)
    model = BNNet()
    model.frozen.weight.requires_grad_(False)  # a frozen layer: the flag must survive
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 6, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True,
                                         generator=torch.Generator().manual_seed(2))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2) \
        if optimizer == "adam" else None
    return Setup(model=model, train_loader=loader, optimizer=opt)


def state_of(model, optimizer):
    """Everything that must come back bit-identical."""
    opt = optimizer.state_dict()
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "opt_state": {k: {s: (t.clone() if torch.is_tensor(t) else t) for s, t in v.items()}
                      for k, v in opt["state"].items()},
        "opt_groups": [{k: v for k, v in g.items()} for g in opt["param_groups"]],
        "torch_rng": torch.get_rng_state().clone(),
        "random": random.getstate(),
        "numpy": np.random.get_state()[1].copy(),
    }


def assert_same(before, after):
    assert before["tensors"].keys() == after["tensors"].keys()
    for k in before["tensors"]:
        assert torch.equal(before["tensors"][k], after["tensors"][k]), k
    for k, g in before["grads"].items():
        assert (g is None and after["grads"][k] is None) or torch.equal(g, after["grads"][k]), k
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"]
    assert before["opt_state"].keys() == after["opt_state"].keys()
    for k, state in before["opt_state"].items():
        for s, t in state.items():
            other = after["opt_state"][k][s]
            assert torch.equal(t, other) if torch.is_tensor(t) else t == other, (k, s)
    assert before["opt_groups"] == after["opt_groups"]
    assert torch.equal(before["torch_rng"], after["torch_rng"])
    assert before["random"] == after["random"]
    assert np.array_equal(before["numpy"], after["numpy"])


@pytest.fixture
def trained_session():
    """A session whose model and Adam have history: moments, BN stats, grads, mixed modes."""
    setup = make_setup()
    session = Session(setup, device="cpu", seed=0)
    for batch in session.batches(2):
        session.train_step(batch)
    setup.model.features.eval()  # mixed train/eval modes must come back as they were
    setup.model.drop.train()
    random.seed(123)
    np.random.seed(456)
    torch.manual_seed(789)
    return session


def test_preserved_restores_everything_bit_identically(trained_session):
    session = trained_session
    model, opt = session.model, session.optimizer
    assert opt.state and int(model.features[1].num_batches_tracked) == 2  # there is history to keep
    before = state_of(model, opt)
    with session.preserved():
        for batch in session.batches(2) * 3:
            session.train_step(batch)
        opt.param_groups[0]["lr"] = 10.0
        model.eval()
        model.head.weight.requires_grad_(False)
        model.frozen.weight.requires_grad_(True)
        random.random(), np.random.rand(3), torch.rand(3)
        during = state_of(model, opt)
    # Something did change inside, so the comparison below can fail.
    assert not torch.equal(during["tensors"]["head.weight"], before["tensors"]["head.weight"])
    assert int(during["tensors"]["features.1.num_batches_tracked"]) == 2 + 6
    assert not torch.equal(during["torch_rng"], before["torch_rng"])
    assert_same(before, state_of(model, opt))


def test_snapshot_restore_after_an_exception(trained_session):
    session = trained_session
    before = state_of(session.model, session.optimizer)
    with pytest.raises(RuntimeError, match="user code failed"):
        with session.preserved():
            session.train_step(session.first_batch)
            raise RuntimeError("user code failed")
    assert_same(before, state_of(session.model, session.optimizer))


def test_fresh_optimizer_state_comes_back_empty():
    setup = make_setup()
    session = Session(setup, device="cpu", seed=0)
    with session.preserved():
        session.train_step(session.first_batch)
        assert session.optimizer.state
    assert not session.optimizer.state


def test_run_checks_leaves_the_users_objects_as_they_were(monkeypatch, trained_session):
    nd_fake_check.register(monkeypatch)
    setup = trained_session.setup
    before = state_of(setup.model, setup.optimizer)
    loader_rng = setup.train_loader.generator.get_state()
    report = run_checks(setup, ["size", "fake"], {"fake": {"steps": 5}}, device="cpu", seed=0)
    assert [c.status for c in report.checks] == ["pass", "pass"], [c.reason for c in report.checks]
    assert_same(before, state_of(setup.model, setup.optimizer))
    assert torch.equal(setup.train_loader.generator.get_state(), loader_rng)


def test_default_optimizer_runs_leave_the_model_alone(monkeypatch):
    nd_fake_check.register(monkeypatch)
    setup = make_setup(optimizer=None)
    before = {k: v.clone() for k, v in setup.model.state_dict().items()}
    run_checks(setup, ["fake"], {"fake": {"steps": 3}}, device="cpu", seed=0)
    after = setup.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_same_seed_same_numbers_and_order_does_not_matter(monkeypatch):
    nd_fake_check.register(monkeypatch)
    setup = make_setup()
    a = run_checks(setup, ["fake"], {"fake": {"steps": 4}}, device="cpu", seed=3)
    b = run_checks(setup, ["size", "fake"], {"fake": {"steps": 4}}, device="cpu", seed=3)
    c = run_checks(setup, ["fake"], {"fake": {"steps": 4}}, device="cpu", seed=4)
    loss = lambda r: next(x for x in r.checks if x.name == "fake").metrics["first_loss"]  # noqa: E731
    assert loss(a) == loss(b)
    assert loss(a) != loss(c)  # the shuffling loader follows the seed


def test_batches_are_cached_and_seeded():
    setup = make_setup()
    generator = setup.train_loader.generator
    before = generator.get_state()
    batches = []
    for _ in range(2):
        session = Session(setup, device="cpu", seed=0)
        with session.preserved():  # as the runner does: the loader's own generator comes back
            batches.append(session.batches(2))
        assert torch.equal(generator.get_state(), before)
    first, again = batches
    assert all(torch.equal(p.raw[0], q.raw[0]) for p, q in zip(first, again))
    session = Session(setup, device="cpu", seed=0)
    assert session.batches(1)[0] is session.batches(2)[0]
    assert len(session.batches(10)) == 2  # the loader holds 16 samples, 8 a batch


def test_split_batch_forms_and_errors():
    x, y = torch.zeros(2, 3), torch.ones(2)
    assert split_batch((x, y)).args[0] is x and split_batch([x, y]).target is y
    assert split_batch(((x, x), y)).args == (x, x)
    assert split_batch({"a": x}).kwargs == {"a": x}
    assert split_batch(({"a": x}, y)).kwargs == {"a": x}
    with pytest.raises(DataError, match="yielded None"):
        split_batch(None)
    with pytest.raises(DataError, match="empty batch"):
        split_batch(())
    with pytest.raises(DataError, match="a batch is a str"):
        split_batch("text")


def test_seed_everything_seeds_all_three():
    seed_everything(11)
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(11)
    assert a == (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_seed_everything_gives_torch_manual_seeds_stream():
    # It seeds the default generator directly (torch.manual_seed is slow: see its comment);
    # a user's code that seeds with torch.manual_seed must see the same numbers.
    seed_everything(5)
    ours = torch.randn(8)
    torch.manual_seed(5)
    assert torch.equal(ours, torch.randn(8))


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize("how", ["torch.compile", "in place"])
def test_a_compiled_model_is_checked_as_its_original_with_the_same_findings(how):
    """A build() that returns torch.compile(model), or a model compiled in place, would run every
    check's hooks inside the compiled graph (static, nan and dead raised, the rest were skipped on
    a healthy MLP): it is checked as its original module, eagerly, with the same findings, each
    `where` too, and a note; a compiled call taken off for the checks is put back."""
    from nndoctor.target import load_target

    def findings(setup):
        report = run_checks(setup, ["static", "nan", "grads", "dead", "overfit"], device="cpu")
        return report, sorted((f.code, f.where, f.message) for f in report.findings)

    path = os.path.join(os.path.dirname(__file__), "..", "sample_models", "dead_relu_mlp.py")
    eager, expected = findings(load_target(path))
    setup = load_target(path)
    if how == "in place":
        setup.model.compile(backend="eager")
        compiled_call = setup.model._compiled_call_impl
    else:
        setup.model = torch.compile(setup.model, backend="eager")
    report, found = findings(setup)
    assert found == expected and ("dead-neurons", "network.3") in [f[:2] for f in found]
    assert any(n.startswith("the model is compiled") for n in report.notes)
    assert not any(n.startswith("the model is compiled") for n in eager.notes)
    if how == "in place":
        assert setup.model._compiled_call_impl is compiled_call
