"""Bad input, fuzzed (issue 6): malformed targets, configs and batches end in a UsageError
(exit 2, one line) or a check with status `error` and a one-line reason; never a
traceback, never a hang, and the user's objects are left as they were.

Derandomized by default, so CI sees the same examples every run (a flaky gate is worse
than none). For a deeper, random search: NNDOCTOR_FUZZ_EXAMPLES=500 NNDOCTOR_FUZZ_RANDOM=1.
"""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
import torch
import torch.nn as nn
import yaml
from conftest import ROOT
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nndoctor import checks as registry
from nndoctor.checks import CHECKS
from nndoctor.cli import app
from nndoctor.config import validate
from nndoctor.engine.runner import run_checks
from nndoctor.errors import UsageError
from nndoctor.render import render_text
from nndoctor.target import SETUP_KEYS, Setup, to_setup

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures", "limits"))
from state_probe import capture, differences  # noqa: E402

FUZZ = settings(max_examples=int(os.environ.get("NNDOCTOR_FUZZ_EXAMPLES", 30)), deadline=None,
                database=None, derandomize=not os.environ.get("NNDOCTOR_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
CHEAP = ["size", "data", "init", "dead", "overfit"]
SETTINGS = {"overfit": {"steps": 3}}  # a short shared training run: 3 steps are enough to crash
# A hang shows up as a "timed out" check (a failed assertion), not a stuck test run.
HANG_SECONDS = 30
STATUSES = {"pass", "warning", "fail", "error", "skipped"}
FEATURES, CLASSES = 4, 3


# ------------------------------------------------------------------ the user's pieces, good and bad

class Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(FEATURES, CLASSES)

    def forward(self, x):
        raise ValueError("checkpoint mismatch in forward")


class Returns(nn.Module):
    """A forward that returns `kind` instead of a plain logits tensor."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(FEATURES, CLASSES)

    def forward(self, x=None, **kwargs):
        if not isinstance(x, torch.Tensor):
            x = next((v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
        out = self.fc(x.float()) if isinstance(x, torch.Tensor) else None
        return {"string": lambda: "logits", "none": lambda: None, "dict": lambda: {"logits": out},
                "tuple": lambda: (out, out), "int": lambda: out.long(), "nan": lambda: out * math.nan,
                "vector_loss": lambda: {"loss": out.sum(-1)}, "hf_loss": lambda: {"loss": out.pow(2).mean()},
                "scalar": lambda: out.sum(), "list": lambda: [1, 2, 3]}[self.kind]()


class NoParameters(nn.Module):
    def forward(self, x):
        return x * 2


MODELS = {
    "mlp": lambda: nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES)),
    "wrong_in_features": lambda: nn.Sequential(nn.Linear(FEATURES + 1, CLASSES)),
    "raises": Raises,
    "no_parameters": NoParameters,
    "frozen": lambda: nn.Linear(FEATURES, CLASSES).requires_grad_(False),
    "empty_sequential": nn.Sequential,
    **{f"returns_{k}": (lambda k=k: Returns(k)) for k in
       ("string", "none", "dict", "tuple", "int", "nan", "vector_loss", "hf_loss", "scalar", "list")},
}


def _x(b=4, features=FEATURES):
    return torch.randn(b, features)


def _y(b=4):
    return torch.randint(0, CLASSES, (b,))


BATCHES = {
    "good": lambda: (_x(), _y()),
    "float_target": lambda: (_x(), torch.randn(4, CLASSES)),
    "none": lambda: None,
    "empty_tuple": lambda: (),
    "string": lambda: "batch",
    "int": lambda: 42,
    "dict_without_labels": lambda: {"x": _x()},
    "dict_with_labels": lambda: {"x": _x(), "labels": _y()},
    "inputs_only": lambda: (_x(),),
    "three_items": lambda: (_x(), _y(), _y()),
    "wrong_features": lambda: (_x(features=FEATURES + 3), _y()),
    "target_batch_mismatch": lambda: (_x(), _y(5)),
    "nan_inputs": lambda: (_x() * math.nan, _y()),
    "empty_batch": lambda: (_x(0), _y(0)),
    "int_inputs": lambda: (torch.randint(0, 5, (4, FEATURES)), _y()),
    "label_out_of_range": lambda: (_x(), torch.full((4,), 7)),
    "negative_labels": lambda: (_x(), torch.full((4,), -1)),
    "python_lists": lambda: ([[0.5] * FEATURES] * 4, [0, 1, 2, 0]),
    "bare_tensor": lambda: _x(),
    "scalar_tensor": lambda: torch.tensor(1.0),
    "one_dim_inputs": lambda: (torch.randn(FEATURES), torch.tensor(1)),
    "bool_target": lambda: (_x(), torch.ones(4, dtype=torch.bool)),
    "string_target": lambda: (_x(), "cat"),
    "tuple_inputs": lambda: ((_x(), _x()), _y()),
    "huge_values": lambda: (_x() * 1e30, _y()),
}


class IterRaises:
    def __iter__(self):
        raise OSError("dataset folder is gone")


class NextRaises:
    def __iter__(self):
        return self

    def __next__(self):
        raise ValueError("corrupt record 17")


LOADER_OBJECTS = {
    "iter_raises": IterRaises,
    "next_raises": NextRaises,
    "string": lambda: "loader",
    "int": lambda: 3,
    "generator": lambda: (b for b in [(_x(), _y())]),
    "factory_of_list": lambda: (lambda: [(_x(), _y())]),
    "factory_raises": lambda: (lambda: 1 / 0),
    "dict": lambda: {"train": 1},
}


def _vector(output, target):
    return (output if isinstance(output, torch.Tensor) else torch.ones(3)).float().reshape(-1)


def _raising(output, target):
    raise RuntimeError("criterion exploded")


CRITERIA = {
    "none": lambda: None,
    "cross_entropy": nn.CrossEntropyLoss,
    "mse": nn.MSELoss,
    "vector": lambda: _vector,
    "raises": lambda: _raising,
    "python_float": lambda: (lambda o, t: 1.0),
    "string": lambda: (lambda o, t: "low"),
    "constant_tensor": lambda: (lambda o, t: torch.tensor(0.5)),
    "nan": lambda: (lambda o, t: torch.tensor(math.nan, requires_grad=True)),
    "not_callable": lambda: 12,
}

LOSS_FNS = {
    "none": lambda: None,
    "scalar": lambda: (lambda model, batch: model(batch[0]).float().pow(2).mean()),
    "returns_none": lambda: (lambda model, batch: None),
    "raises": lambda: (lambda model, batch: batch["missing"]),
}

OPTIMIZERS = {
    "none": lambda model: None,
    "sgd_factory": lambda model: (lambda params: torch.optim.SGD(params, lr=0.1)),
    "adam": lambda model: torch.optim.Adam(model.parameters(), lr=1e-3) if list(model.parameters()) else None,
    "factory_raises": lambda model: (lambda params: torch.optim.SGD(params, lr=-1.0)),
    "other_models_params": lambda model: torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1),
    "string": lambda model: "adam",
    "huge_lr": lambda model: (lambda params: torch.optim.SGD(params, lr=1e30)),
}


# ------------------------------------------------------------------ what every run must give

def assert_sound(report, names, before=None, after=None):
    """Every chosen check reported, each with a known status and, for error/skipped, a
    one-line reason; the report renders in every format; the user's objects untouched."""
    assert [c.name for c in report.checks] == [n for n in CHECKS if n in names]
    for check in report.checks:
        assert check.status in STATUSES
        if check.status in ("error", "skipped"):
            reason = check.reason or ""
            assert reason.strip() and "\n" not in reason, (check.name, reason)
            assert "timed out" not in reason, f"{check.name} hung: {reason}"
            assert "Traceback" not in reason
    json.dumps(report.to_dict(), allow_nan=False)
    for fmt in ("json", "junit", "github", "sarif", "markdown"):
        render_text(report, fmt)
    if before is not None:
        assert differences(before, after) == []


def ran(report) -> str:
    """The statuses a run ended in, for --hypothesis-show-statistics."""
    return "ran: " + ", ".join(sorted({c.status for c in report.checks}))


def run_cheap(setup: Setup, names=CHEAP, settings_=SETTINGS):
    before = capture(setup.model, setup.optimizer)
    report = run_checks(setup, names, settings_, device="cpu", seed=0, max_seconds=HANG_SECONDS)
    assert_sound(report, names, before, capture(setup.model, setup.optimizer))
    return report


# ------------------------------------------------------------------ properties

batch_lists = st.lists(st.sampled_from(sorted(BATCHES)), min_size=0, max_size=3)


@FUZZ
@given(model=st.sampled_from(sorted(MODELS)), batches=batch_lists, criterion=st.sampled_from(sorted(CRITERIA)),
       loss_fn=st.sampled_from(sorted(LOSS_FNS)), optimizer=st.sampled_from(sorted(OPTIMIZERS)))
@pytest.mark.slow
def test_malformed_models_batches_and_losses(model, batches, criterion, loss_fn, optimizer):
    torch.manual_seed(0)
    net = MODELS[model]()
    raw = {"model": net, "train_loader": [BATCHES[b]() for b in batches], "criterion": CRITERIA[criterion](),
           "loss_fn": LOSS_FNS[loss_fn](), "optimizer": OPTIMIZERS[optimizer](net)}
    try:
        setup = to_setup(raw)
    except UsageError as exc:
        assert str(exc).strip() and "\n" not in str(exc)
        event("usage error")
        return
    event(ran(run_cheap(setup)))


def _values(model_factory=MODELS["mlp"]):
    """Any value a careless build() might put anywhere."""
    return st.one_of(
        st.none(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=5), st.booleans(),
        st.just(math.inf),
        st.sampled_from(sorted(MODELS)).map(lambda k: MODELS[k]()),
        st.sampled_from(sorted(LOADER_OBJECTS)).map(lambda k: LOADER_OBJECTS[k]()),
        batch_lists.map(lambda names: [BATCHES[b]() for b in names]),
        st.sampled_from(sorted(CRITERIA)).map(lambda k: CRITERIA[k]()),
        st.builds(lambda: (lambda *a, **k: None)),
    )


models = st.sampled_from(sorted(MODELS)).map(lambda k: MODELS[k]())
targets = st.one_of(
    _values(),
    st.dictionaries(st.one_of(st.sampled_from(SETUP_KEYS), st.text(max_size=6), st.integers()), _values(),
                    max_size=5),
    st.fixed_dictionaries({"model": st.one_of(models, _values())},
                          optional={k: _values() for k in SETUP_KEYS if k != "model"}),
    # A real model with odd company: these load, so the checks meet the odd values.
    st.fixed_dictionaries({"model": models}, optional={k: _values() for k in SETUP_KEYS if k != "model"}),
    st.tuples(models, _values()), st.tuples(models, _values(), _values()),
    st.lists(_values(), max_size=7).map(tuple),
    st.lists(_values(), max_size=7),
)


@FUZZ
@given(obj=targets)
def test_malformed_targets(obj):
    try:
        setup = to_setup(obj, label="nd_fuzz.py:build")
    except UsageError as exc:
        message = str(exc)
        assert message.startswith("nd_fuzz.py:build") and "\n" not in message
        event("usage error")
        return
    event(ran(run_cheap(setup)))


CONFIG_KEYS = sorted({"target", "data", "fail_on", "seed", "device", "max_seconds", "only", "skip", *CHECKS})
SETTING_KEYS = sorted({"steps", "threshold", "batches", "max_rms", "input", "max_params", "max_mb", "max_flops",
                       "depth", "loss_ratio", "collapse_ratio", "explode_ratio", "saturated_threshold", "epochs",
                       "num_iter", "plot", "typo"})
# Bounded: a config may legitimately ask for 10**9 steps; these must run in a blink.
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 8), st.floats(-10, 10),
                    st.sampled_from([math.nan, math.inf, -math.inf]), st.text(max_size=6))
yaml_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                           max_leaves=6)
sections = st.dictionaries(st.sampled_from(SETTING_KEYS), yaml_values, max_size=3)
# Each cheap check's own settings with odd values (0, -3, NaN, inf, strings, lists): they pass
# validation more often than random keys, so the checks meet the values.
own_sections = st.fixed_dictionaries({}, optional={
    name: st.fixed_dictionaries({}, optional={key: scalars for key in registry.defaults(name)})
    for name in CHEAP})
configs = st.one_of(
    yaml_values,
    st.dictionaries(st.one_of(st.sampled_from(CONFIG_KEYS), st.text(max_size=8)),
                    st.one_of(yaml_values, sections), max_size=4),
    st.dictionaries(st.sampled_from(CHEAP), sections, min_size=1, max_size=3),
    own_sections, own_sections,
)


@pytest.fixture(scope="module")
def healthy_setup():
    torch.manual_seed(0)
    model = MODELS["mlp"]()
    loader = [(_x(8), _y(8)) for _ in range(2)]
    return Setup(model=model, train_loader=loader, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2))


@FUZZ
@given(raw=configs)
def test_malformed_configs(raw, healthy_setup):
    try:
        config = validate(raw, "nndoctor.yaml")
    except UsageError as exc:
        message = str(exc)
        assert message.startswith("nndoctor.yaml") and "\n" not in message
        event("usage error")
        return
    settings_ = {name: dict(section) for name, section in config["checks"].items()}
    overfit = settings_.setdefault("overfit", {})
    if not isinstance(overfit.get("steps"), (int, float)) or not 0 <= overfit["steps"] <= 5:
        overfit["steps"] = 3  # any shorter run than 100 steps does; nan/inf/-3 are judged above
    settings_.get("size", {}).pop("plot", None)
    event(ran(run_cheap(healthy_setup, CHEAP, settings_)))


# ------------------------------------------------------------------ through the command line

runner = CliRunner()
TINY = "tests/fixtures/limits/nd_seq_dead.py"


def assert_usage_error(result, words=""):
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nndoctor: error: "), result.stderr
    assert words in lines[0] and "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("text, words", [
    ("overfit: [1, 2]\n", "'overfit' must be a mapping"),
    ("overfit:\n  steps: ten\n", "overfit.steps must be a number"),
    ("dead: {treshold: 40}\n", "unknown key dead.treshold"),
    ("seed: [0]\n", "'seed' must be an integer"),
    ("fail_on: sometimes\n", "fail_on must be error, warning or never"),
    ("skip: sise\n", "unknown check 'sise'"),
    ("device: tpu\n", "unknown device 'tpu'"),
    ("size: {input: [1, 4]\n", "invalid YAML in"),
    ("- a list\n- not a mapping\n", "must be a mapping of keys"),
    ("!!python/object:os.system {}\n", "invalid YAML in"),
])
def test_bad_config_files_are_one_line(tmp_path, text, words):
    path = tmp_path / "nd.yaml"
    path.write_text(text)
    assert_usage_error(runner.invoke(app, ["check", TINY, "--config", str(path), "--only", "size"]), words)


@settings(max_examples=int(os.environ.get("NNDOCTOR_FUZZ_EXAMPLES", 25)), deadline=None, database=None,
          derandomize=not os.environ.get("NNDOCTOR_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.slow
@given(text=st.one_of(st.text(max_size=40), configs.map(lambda c: yaml.safe_dump(c, allow_unicode=True))))
def test_any_config_file_is_a_run_or_one_line(tmp_path, text):
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        parsed = None
    # `data: NAME` imports the module NAME: random text must not import arbitrary modules.
    assume(not (isinstance(parsed, dict) and isinstance(parsed.get("data"), str)))
    path = tmp_path / "nd.yaml"
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["check", TINY, "--config", str(path), "--only", "size", "--format", "json"])
    if result.exit_code == 2:
        assert_usage_error(result)
    else:
        assert result.exit_code in (0, 1), (result.exit_code, result.stderr, repr(result.exception))
        assert json.loads(result.stdout)["checks"]


@pytest.mark.parametrize("args, words", [
    (["check", "tests/fixtures/bad/nd_bad.py:wrong_type"], "gave an int"),
    (["check", "tests/fixtures/bad/nd_bad.py:tuple_too_long"], "tuple of 6 items"),
    (["check", "tests/fixtures/bad/nd_bad.py:not_a_module"], "'model' is a str, not an nn.Module"),
    (["check", "tests/fixtures/bad/nd_bad.py:dict_unknown_key"], "unknown key 'modle'"),
    (["check", TINY, "--max-seconds", "soon"], ""),
    (["check", TINY, "--data", "tests/fixtures/bad/nd_bad.py:wrong_type", "--only", "data"], ""),
])
def test_bad_targets_on_the_command_line_are_one_line(args, words):
    result = runner.invoke(app, args)
    if words:
        assert_usage_error(result, words)
    else:  # typer/click's own usage errors: exit 2, no traceback
        assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr


# ------------------------------------------------------------------ what the fuzzing found, pinned

def _reasons(setup, names=CHEAP):
    return {c.name: (c.status, c.reason) for c in run_cheap(setup, names).checks}


def test_a_model_without_parameters_runs_the_forward_checks():
    # Adam refused the empty parameter list: the whole run crashed before any check.
    reasons = _reasons(to_setup({"model": NoParameters(), "train_loader": [(_x(), _x())]}))
    assert reasons["size"] == ("pass", None) and reasons["data"] == ("pass", None)
    assert reasons["overfit"] == ("error", "the model has no trainable parameters (no requires_grad=True): "
                                           "nothing to train")


def test_a_bad_first_batch_is_named_by_every_check():
    # The batch was consumed before it failed to split: later checks said "the loader is empty".
    reasons = _reasons(to_setup({"model": MODELS["mlp"](), "train_loader": ["batch"]}))
    assert set(reasons.values()) == {("error", "a batch is a str; expected (inputs, targets), a dict or a tensor")}
    reasons = _reasons(to_setup({"model": MODELS["mlp"](), "train_loader": NextRaises()}), ["data", "overfit"])
    line = _line('raise ValueError("corrupt record 17")')
    assert set(reasons.values()) == {("error", f"ValueError: corrupt record 17 (at tests/test_fuzz.py:{line} "
                                               "in __next__)")}


def test_an_empty_batch_is_a_data_error():
    # 0 samples: the data check crashed inside torch.min() of an empty tensor.
    reasons = _reasons(to_setup({"model": MODELS["mlp"](), "train_loader": [BATCHES["empty_batch"]()]}))
    assert set(reasons.values()) == {("error", "the loader yielded a batch of 0 samples")}


def test_a_loss_that_is_not_a_tensor_says_so():
    setup = to_setup({"model": MODELS["mlp"](), "train_loader": [BATCHES["good"]()],
                      "criterion": CRITERIA["python_float"]()})
    assert _reasons(setup, ["overfit"])["overfit"] == (
        "error", "the loss is a float, not a tensor; return a scalar tensor that autograd can differentiate")
    setup = to_setup({"model": MODELS["mlp"](), "train_loader": [BATCHES["good"]()], "criterion": _vector})
    assert _reasons(setup, ["overfit"])["overfit"] == (
        "error", "the loss is not a scalar (got shape (12,)); reduce it with .mean()")


def test_a_wrapped_error_is_reported_by_its_root_cause():
    # torchinfo wraps a forward called with the wrong arguments (no frame of the user's code
    # in it) as "Failed to run torchinfo. See above stack traces": the root cause says what.
    setup = to_setup({"model": MODELS["mlp"](), "train_loader": [BATCHES["tuple_inputs"]()]})
    status, reason = _reasons(setup, ["size"])["size"]
    assert status == "error" and reason.startswith("TypeError: ") and "torchinfo" not in reason
    assert "positional argument" in reason


def test_a_bad_device_is_a_usage_error():
    import nndoctor

    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        nndoctor.diagnose(MODELS["mlp"](), device="tpu")


def _line(text: str) -> int:
    with open(__file__, encoding="utf-8") as fh:
        return next(i for i, line in enumerate(fh, 1) if text in line)
