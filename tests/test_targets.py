"""SPEC §1: every target shape loads, batches and losses are wired as documented."""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn as nn

from nndoctor.engine.runner import run_checks
from nndoctor.engine.session import DEFAULT_LR, Session
from nndoctor.errors import TargetError
from nndoctor.target import Setup, load_target, split_target

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
SHAPES = os.path.join(FIXTURES, "targets", "nd_shapes.py")
DATA = os.path.join(FIXTURES, "targets", "nd_data.py")


def shape(attr: str, data: str | None = None) -> Setup:
    return load_target(f"{SHAPES}:{attr}", data)


def session_of(setup: Setup) -> Session:
    return Session(setup, device="cpu", seed=0)


def first_params(model: nn.Module) -> torch.Tensor:
    return next(model.parameters())


@pytest.mark.parametrize("spec, expected", [
    ("model.py:build", ("model.py", "build")),
    ("model.py", ("model.py", "build")),
    ("model.py:", ("model.py", "build")),
    ("dir/model.py:make.sub", ("dir/model.py", "make.sub")),
    ("pkg.mod:net", ("pkg.mod", "net")),
    ("C:\\models\\x.py", ("C:\\models\\x.py", "build")),
])
def test_split_target(spec, expected):
    assert split_target(spec) == expected


def test_default_attr_is_build_and_sibling_import_works():
    setup = load_target(SHAPES)  # no ":ATTR": build(); nd_shapes imports its sibling _nd_helpers
    assert isinstance(setup.model, nn.Sequential)
    assert len(list(setup.train_loader)) == 4  # 32 samples / 8
    assert "_nd_helpers" in sys.modules
    assert os.path.dirname(sys.modules["_nd_helpers"].__file__) == os.path.dirname(SHAPES)


def test_a_file_target_without_the_py_suffix_is_a_clear_error(tmp_path):
    (tmp_path / "model").write_text("def build():\n    pass\n")
    with pytest.raises(TargetError, match="not a Python file"):
        load_target(f"{tmp_path / 'model'}:build")


@pytest.mark.parametrize("attr", ["module_only", "MODEL_OBJECT", "Net", "tuple_of_1", "with_example_input"])
def test_model_without_data(attr):
    setup = shape(attr)
    assert isinstance(setup.model, nn.Module)
    assert setup.train_loader is None and setup.criterion is None and setup.optimizer is None


def test_class_attribute_is_called():
    assert type(shape("Net").model).__name__ == "Net"


@pytest.mark.parametrize("attr", ["build", "DICT_OBJECT", "tuple_of_2", "as_setup", "list_of_3"])
def test_model_with_loader(attr):
    setup = shape(attr)
    x, y = next(iter(setup.train_loader))
    assert x.shape == (8, 4) and y.dtype == torch.int64


def test_tuple_of_5_fills_every_slot_in_order():
    setup = shape("tuple_of_5")
    assert isinstance(setup.criterion, nn.CrossEntropyLoss)
    assert isinstance(setup.optimizer, torch.optim.SGD)
    assert setup.optimizer.param_groups[0]["lr"] == 0.1
    assert setup.val_loader is not None and setup.val_loader is not setup.train_loader
    # The optimizer holds the very parameters of the model it came with.
    assert setup.optimizer.param_groups[0]["params"][0] is first_params(setup.model)


def test_list_target_keeps_its_criterion():
    assert shape("list_of_3").criterion.label_smoothing == 0.1


def test_setup_is_exported_lazily():
    import nndoctor

    assert nndoctor.Setup is Setup


def test_loaders_given_as_zero_argument_callables_are_called():
    setup = shape("loader_as_callable")
    assert len(setup.train_loader.dataset) == 32
    assert len(setup.val_loader.dataset) == 32


def test_optimizer_given_as_a_callable_is_built_over_the_model():
    setup = shape("optimizer_as_callable")
    opt = setup.optimizer
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in setup.model.parameters()}


def test_package_module_target(monkeypatch):
    monkeypatch.syspath_prepend(FIXTURES)
    setup = load_target("ndfixpkg.models:build")
    assert [m.__class__.__name__ for m in setup.model] == ["Linear", "Tanh", "Linear"]
    assert load_target("ndfixpkg.models:tiny").model.in_features == 3
    assert isinstance(load_target("ndfixpkg.models").model, nn.Sequential)  # ATTR defaults to build


def test_package_target_importable_from_the_working_folder(monkeypatch):
    # `nndoctor check mypkg.models:build` from a project root: the console script
    # does not put the working folder on sys.path, nndoctor does.
    monkeypatch.chdir(FIXTURES)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if os.path.abspath(p or ".") != FIXTURES])
    for name in [m for m in sys.modules if m.startswith("ndfixpkg")]:
        monkeypatch.delitem(sys.modules, name)
    assert load_target("ndfixpkg.models:tiny").model.out_features == 1


# ------------------------------------------------------------------ --data factories

def test_data_factory_returning_a_loader():
    setup = shape("module_only", f"{DATA}:train_only")
    assert setup.train_loader.batch_size == 4 and setup.val_loader is None


def test_data_factory_returning_a_pair():
    setup = shape("module_only", f"{DATA}:pair")
    assert (setup.train_loader.batch_size, setup.val_loader.batch_size) == (4, 16)


def test_data_factory_returning_a_dict():
    setup = shape("module_only", f"{DATA}:as_dict")
    assert (setup.train_loader.batch_size, setup.val_loader.batch_size) == (4, 16)


def test_data_factory_returning_a_list_of_batches_is_one_loader():
    setup = shape("module_only", f"{DATA}:list_of_batches")
    assert setup.val_loader is None
    assert [tuple(x.shape) for x, _ in setup.train_loader] == [(4, 4), (4, 4)]


def test_data_overrides_the_targets_loader():
    setup = shape("build", f"{DATA}:train_only")
    assert setup.train_loader.batch_size == 4


@pytest.mark.parametrize("attr, words", [
    ("unknown_key", ["unknown key 'train'", "nd_data.py"]),
    ("returns_none", ["nd_data.py:returns_none", "None"]),
    ("raises", ["RuntimeError: dataset folder missing", "nd_data.py:"]),
])
def test_bad_data_factories(attr, words):
    with pytest.raises(TargetError) as info:
        shape("module_only", f"{DATA}:{attr}")
    for word in words:
        assert word in str(info.value)


# ------------------------------------------------------------------ batches and losses

def test_integer_targets_choose_cross_entropy_and_the_report_says_so():
    setup = shape("build")
    session = session_of(setup)
    batch = session.first_batch
    loss = session.loss(batch)
    x, y = batch.raw
    assert torch.equal(loss, nn.functional.cross_entropy(setup.model(x), y))
    assert session.criterion_name == "CrossEntropyLoss"
    assert session.notes == ["criterion: CrossEntropyLoss (chosen: the targets are integer class labels)"]


def test_report_notes_say_which_criterion_was_chosen(monkeypatch):
    monkeypatch.syspath_prepend(FIXTURES)
    import nd_fake_check

    nd_fake_check.register(monkeypatch)
    report = run_checks(shape("build"), ["fake"], target="t", device="cpu")
    assert report.checks[0].status == "pass", report.checks[0].reason
    assert [n for n in report.notes if "criterion" in n] == [
        "criterion: CrossEntropyLoss (chosen: the targets are integer class labels)"]
    assert report.to_dict()["notes"] == report.notes


def test_float_targets_choose_mse():
    setup = shape("float_targets")
    session = session_of(setup)
    batch = session.first_batch
    x, y = batch.raw
    assert torch.equal(session.loss(batch), nn.functional.mse_loss(setup.model(x), y))
    assert session.criterion_name == "MSELoss"
    assert any("MSELoss" in note for note in session.notes)


def test_given_criterion_is_used_and_nothing_is_chosen():
    setup = shape("list_of_3")
    session = session_of(setup)
    batch = session.first_batch
    x, y = batch.raw
    expected = nn.CrossEntropyLoss(label_smoothing=0.1)(setup.model(x), y)
    assert torch.equal(session.loss(batch), expected)
    assert session.criterion_name is None and session.notes == []


def test_nested_input_tuple_is_unpacked_into_the_call():
    setup = shape("nested_inputs")
    session = session_of(setup)
    batch = session.first_batch
    (x1, x2), y = batch.raw
    assert len(batch.args) == 2 and batch.target is y
    assert torch.equal(session.loss(batch), nn.functional.cross_entropy(setup.model(x1, x2), y))


@pytest.mark.parametrize("attr", ["dict_batches_attr", "dict_batches_key"])
def test_dict_batches_use_the_models_own_loss(attr):
    setup = shape(attr)
    session = session_of(setup)
    batch = session.first_batch
    assert batch.args == () and set(batch.kwargs) == {"features", "labels"}
    raw = batch.raw
    expected = nn.functional.cross_entropy(setup.model.fc(raw["features"]), raw["labels"]) * 10.0
    assert torch.allclose(session.loss(batch), expected)
    assert session.criterion_name is None  # the model's loss, not a default criterion


def test_loss_fn_overrides_the_criterion():
    setup = shape("with_loss_fn")
    session = session_of(setup)
    batch = session.first_batch
    x, _ = batch.raw
    assert torch.equal(session.loss(batch), (setup.model(x) - 1.0).pow(2).mean())


def test_default_optimizer_is_adam_lr_1e_3():
    setup = shape("build")
    session = session_of(setup)
    assert setup.optimizer is None and session.default_optimizer
    assert isinstance(session.optimizer, torch.optim.Adam)
    assert session.optimizer.param_groups[0]["lr"] == DEFAULT_LR == 1e-3


def test_given_optimizer_is_the_one_stepped():
    setup = shape("optimizer_as_callable")
    session = session_of(setup)
    assert session.optimizer is setup.optimizer and not session.default_optimizer
    batch = session.first_batch
    before = first_params(setup.model).detach().clone()
    session.train_step(batch)
    assert session.optimizer.state  # SGD momentum buffers exist after a step
    assert not torch.equal(before, first_params(setup.model))


@pytest.mark.parametrize("attr", ["build", "nested_inputs", "dict_batches_key", "with_loss_fn",
                                  "with_example_input", "float_targets"])
def test_size_check_runs_on_every_batch_form(attr):
    setup = shape(attr)
    report = run_checks(setup, ["size"], target=attr, device="cpu")
    (check,) = report.checks
    assert check.status == "pass", check.reason
    assert report.sections["size"]["total_params"] == sum(p.numel() for p in setup.model.parameters())
