"""A model is diagnosed holding one extra copy of its weights (issue 6)."""

import torch
import torch.nn as nn

from nndoctor.engine.session import Session
from nndoctor.target import Setup


def _session():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    loader = [(torch.randn(4, 8), torch.tensor([0, 1, 0, 1]))]
    return Session(Setup(model=model, train_loader=loader), device="cpu")


def _count_full_snapshots(session, monkeypatch):
    calls = []
    original = Session.snapshot

    def counting(self, weights=True):
        calls.append(weights)
        return original(self, weights)

    monkeypatch.setattr(Session, "snapshot", counting)
    return calls


def test_nested_scopes_copy_the_weights_once(monkeypatch):
    session = _session()
    calls = _count_full_snapshots(session, monkeypatch)
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    with session.preserved():  # the run
        for _ in range(3):
            with session.preserved():  # a check
                session.shared("work", lambda: session.train_step(session.first_batch).item())
                with session.preserved():  # e.g. num_outputs() inside the check
                    pass
                session.train_step(session.first_batch)
    assert calls.count(True) == 1, calls
    for k, v in session.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_scope_opened_mid_training_still_restores_its_own_state(monkeypatch):
    session = _session()
    with session.preserved():
        with session.preserved():
            session.train_step(session.first_batch)
            trained = {k: v.clone() for k, v in session.model.state_dict().items()}
            with session.preserved():  # weights differ from the base: a full copy
                session.train_step(session.first_batch)
            for k, v in session.model.state_dict().items():
                assert torch.equal(v, trained[k]), k


def test_a_reassigned_parameter_is_not_taken_for_the_base_one():
    session = _session()
    first = session.model[0]
    original = first.weight.detach().clone()
    with session.preserved():
        with session.preserved():
            first.weight = nn.Parameter(torch.zeros_like(first.weight))  # same version 0
    # after the run the parameter object may be the new one, but its values are the base's
    assert torch.equal(session.model[0].weight.detach(), original)


def test_the_shared_run_frees_each_steps_gradients_before_the_next_backward():
    # Held into the next step, they would sit beside the next backward's: a whole extra copy.
    import weakref

    from nndoctor.probes import train_run as instrument

    session = _session()
    previous, alive = [], []

    def after_step(optimizer, args, kwargs):
        previous[:] = [weakref.ref(p.grad) for p in session.model.parameters() if p.grad is not None]

    def during_backward(grad):  # how many of the last step's gradients still exist
        alive.append(sum(ref() is not None for ref in previous))

    session.optimizer.register_step_post_hook(after_step)
    session.model[0].weight.register_hook(during_backward)
    with session.preserved():
        run = instrument.train_run(session, 5)
    assert run.steps_done == 5 and len(previous) == 6
    assert alive == [0] * 5


def test_no_update_ratio_copy_above_the_size_limit(monkeypatch):
    from nndoctor.checks import grads
    from nndoctor.probes import train_run as instrument

    session = _session()
    with session.preserved():
        measured = instrument.train_run(session, 3)
    assert measured.update_ratio and measured.update_ratio_skipped is None
    monkeypatch.setattr(instrument, "UPDATE_RATIO_MAX_MB", 0)
    with session.preserved():
        skipped = instrument.train_run(session, 3)
    assert skipped.update_ratio == {} and skipped.update_ratio_skipped.startswith("not measured")
    assert grads.metrics(skipped)["update_ratio"] == skipped.update_ratio_skipped
