"""size: parameters and mult-adds (torchinfo), FLOPs (FlopCounterMode + RNN/attention formulas),
budgets, the per-layer breakdown, and a check that leaves buffers and modes as it found them."""

from __future__ import annotations

import io
import json

import pytest
import torch
import torch.nn as nn
from conftest import codes_of, load_sample, run_checks_on, sample_path
from rich.console import Console
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from nndoctor.checks import size as size_check
from nndoctor.cli import app
from nndoctor.engine.runner import run_checks
from nndoctor.engine.session import Session
from nndoctor.probes.flops import rnn_stack_flop
from nndoctor.render.rich import size_section
from nndoctor.target import Setup

SIZED = ["xor", "mlp", "simple_cnn", "text_classifier", "bottleneck", "transformer_encoder"]
SPEC_KEYS = {"nndoctor", "target", "device", "seed", "seconds", "status", "checks", "findings"}
SIZE_KEYS = {"total_params", "trainable_params", "param_mb", "mult_adds", "flops", "input_size"}


@pytest.fixture(scope="module")
def reports():
    return {name: run_checks_on(name, ["size"]) for name in SIZED}


def _size(report) -> dict:
    assert report.checks[0].status != "error", report.checks[0].reason
    return report.sections["size"]


def _sized_input(name):
    """The model and the exact input `size` measures for a sample."""
    setup = load_sample(name)
    session = Session(setup, device="cpu")
    args, kwargs, _ = size_check.model_input(session, None)
    return setup.model, args, kwargs


# --------------------------------------------------------------------------- FLOPs

@pytest.mark.parametrize("name", ["transformer_encoder", "simple_cnn", "mlp"])
def test_flops_equal_a_direct_flop_counter_count(reports, name):
    model, args, kwargs = _sized_input(name)
    model.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        # The MATH attention backend runs Q·Kᵀ and A·V as bmm, which torch's stock
        # formulas count: an oracle for our formula of the fused CPU attention kernel.
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(*args, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    assert _size(reports[name])["flops"] == counter.get_total_flops() > 0
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


def test_transformer_fast_path_is_off_while_counting(reports):
    model, args, _ = _sized_input("transformer_encoder")
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fused:  # fast path on: one fused kernel
        model(*args)
    flops = _size(reports["transformer_encoder"])["flops"]
    assert flops > 1000 * fused.get_total_flops()
    # Per layer: the QKV and output projections, the 2 feed-forward matmuls, Q·Kᵀ and A·V.
    batch, seq = args[0].shape
    layers = model.encoder.layers
    d, ff, classes = model.head.in_features, layers[0].linear1.out_features, model.head.out_features
    per_layer = 2 * batch * seq * (3 * d * d + d * d + 2 * d * ff) + 2 * 2 * batch * seq * seq * d
    assert flops == len(layers) * per_layer + 2 * batch * d * classes  # + the head on the pooled vector


def analytic_rnn_flops(kind, input_size, hidden, layers, bidirectional, tokens, proj=0) -> int:
    """Per layer, per direction, per token: gates·h·(in + h_out) multiply-adds (x·W_ihᵀ, h·W_hhᵀ),
    plus h·proj for an LSTM's projection; 2 FLOPs each. Bias adds and the gates' elementwise
    work count 0, as in FlopCounterMode's addmm formula."""
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    directions = 2 if bidirectional else 1
    out = proj or hidden
    total = 0
    for layer in range(layers):
        layer_in = input_size if layer == 0 else directions * out
        total += directions * tokens * (gates * hidden * (layer_in + out) + hidden * proj)
    return 2 * total


class RecurrentClassifier(nn.Module):
    def __init__(self, kind, batch_first, **rnn):
        super().__init__()
        self.rnn = getattr(nn, kind)(batch_first=batch_first, **rnn)
        self.time_dim = 1 if batch_first else 0
        out = rnn.get("proj_size") or rnn["hidden_size"]
        self.head = nn.Linear(out * (2 if rnn.get("bidirectional") else 1), 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out.mean(self.time_dim))


RNN_CASES = [
    ("LSTM", dict(num_layers=1, bidirectional=False), True),
    ("LSTM", dict(num_layers=2, bidirectional=True), False),
    ("LSTM", dict(num_layers=2, bidirectional=True, bias=False), True),
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=6), True),
    ("GRU", dict(num_layers=1, bidirectional=True), True),
    ("GRU", dict(num_layers=2, bidirectional=False, bias=False), False),
    ("RNN", dict(num_layers=2, bidirectional=True, nonlinearity="tanh"), True),
    ("RNN", dict(num_layers=1, bidirectional=False, nonlinearity="relu"), False),
]
BATCH, STEPS, FEATURES, HIDDEN = 3, 7, 10, 16


@pytest.mark.parametrize("kind,options,batch_first", RNN_CASES)
def test_rnn_flops_equal_the_analytic_count(kind, options, batch_first):
    torch.manual_seed(0)
    model = RecurrentClassifier(kind, batch_first, input_size=FEATURES, hidden_size=HIDDEN, **options)
    shape = (BATCH, STEPS, FEATURES) if batch_first else (STEPS, BATCH, FEATURES)
    session = Session(Setup(model=model, example_input=torch.randn(shape)), device="cpu")
    size = size_check.run(session, dict(size_check.DEFAULTS)).sections["size"]
    expected = analytic_rnn_flops(kind, FEATURES, HIDDEN, options["num_layers"], options["bidirectional"],
                                  BATCH * STEPS, options.get("proj_size", 0))
    assert size["flops"] == expected + 2 * BATCH * model.head.in_features * 3


def test_lstm_fused_kernel_formula_matches_torchs_own_matmul_count():
    # With oneDNN on, nn.LSTM runs aten.mkldnn_rnn_layer (our formula); off, it runs
    # mm/addmm that torch's stock formulas count: both must agree.
    from nndoctor.probes.flops import count_flops

    model = nn.LSTM(10, 16, num_layers=2, bidirectional=True)
    x = torch.randn(7, 3, 10)
    fused = count_flops(model, (x,), {}).total
    with torch.backends.mkldnn.flags(enabled=False), torch.no_grad(), \
            FlopCounterMode(display=False) as stock:
        model.eval()(x)
    assert fused == stock.get_total_flops() == analytic_rnn_flops("LSTM", 10, 16, 2, True, 21)


@pytest.mark.parametrize("kind,options", [("LSTM", dict(num_layers=2, bidirectional=True, proj_size=6)),
                                          ("GRU", dict(num_layers=2, bidirectional=True)),
                                          ("RNN", dict(num_layers=1, bias=False))])
def test_cudnn_formula_on_the_flat_weight_list(kind, options):
    # aten._cudnn_rnn / miopen_rnn get every layer's weights at once (no GPU here:
    # the formula is fed the same flat weight list nn.RNNBase hands them).
    model = getattr(nn, kind)(FEATURES, HIDDEN, **options)
    shapes = [w.shape for w in model._flat_weights]
    flops = rnn_stack_flop(torch.Size([STEPS, BATCH, FEATURES]), shapes)
    assert flops == analytic_rnn_flops(kind, FEATURES, HIDDEN, options["num_layers"],
                                       options.get("bidirectional", False), STEPS * BATCH,
                                       options.get("proj_size", 0))


def test_text_classifier_lstm_is_counted(reports):
    # Embedding 64 -> bidirectional LSTM 128 over 32 x 64 tokens, then Linear(256, 4).
    size = _size(reports["text_classifier"])
    assert size["flops"] == analytic_rnn_flops("LSTM", 64, 128, 1, True, 32 * 64) + 2 * 32 * 256 * 4


@pytest.mark.parametrize("name", ["mlp", "simple_cnn"])
def test_flops_are_twice_torchinfos_mult_adds_on_mlp_and_cnn(reports, name):
    size = _size(reports[name])
    assert size["flops"] == pytest.approx(2 * size["mult_adds"], rel=0.01)
    assert "flops-undercounted" not in codes_of(reports[name])


def test_transformer_disagreement_names_what_torchinfo_missed(reports):
    report = reports["transformer_encoder"]
    [finding] = [f for f in report.findings if f.code == "flops-undercounted"]
    size = _size(report)
    assert finding.severity == "info"
    assert finding.evidence["flops"] == size["flops"]
    assert finding.evidence["ratio"] > size_check.DISAGREE_RATIO
    missed = {m["type"]: m for m in finding.evidence["modules"]}
    assert missed["MultiheadAttention"]["modules"] == 4 and missed["Linear"]["modules"] == 8
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in missed["MultiheadAttention"]["ops"]
    assert "MultiheadAttention" in finding.message and "trust flops" in finding.message
    assert finding.where.startswith("encoder.layers.")
    assert report.status == "pass"  # info only: a healthy sample stays quiet


def test_overcount_by_torchinfo_is_explained_too():
    # torchinfo counts an Embedding lookup as batch x vocab x dim mult-adds; it does none.
    model = nn.Sequential(nn.Embedding(5000, 32), nn.Flatten(), nn.Linear(32 * 4, 2))
    session = Session(Setup(model=model, example_input=torch.zeros(8, 4, dtype=torch.long)), device="cpu")
    outcome = size_check.run(session, dict(size_check.DEFAULTS))
    [finding] = [f for f in outcome.findings if f.code == "flops-undercounted"]
    assert outcome.sections["size"]["flops"] == 2 * 8 * 128 * 2
    assert finding.evidence["modules"][0]["type"] == "Embedding" and finding.where == "0"


# --------------------------------------------------------------------------- parameters

@pytest.mark.parametrize("name", SIZED)
def test_params_equal_direct_count_and_torchinfo(reports, name):
    import torchinfo

    size = _size(reports[name])
    model, args, kwargs = _sized_input(name)
    stats = torchinfo.summary(model, input_data=kwargs or list(args), mode="eval", verbose=0)
    assert size["total_params"] == sum(p.numel() for p in model.parameters()) == stats.total_params
    assert size["trainable_params"] == stats.trainable_params
    assert reports[name].status == "pass"  # healthy: no warning or error from size


# --------------------------------------------------------------------------- state

def _mixed_mode_cnn():
    setup = load_sample("simple_cnn")
    model = setup.model
    model.train()
    model.features[1][1].eval()  # a frozen BatchNorm inside a training model
    with torch.no_grad():  # running stats that are not the init values
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.num_batches_tracked.fill_(7)
    return setup


def _state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {name: m.training for name, m in model.named_modules()})


def _assert_same(model, before):
    tensors, modes = before
    after = model.state_dict()
    assert all(torch.equal(tensors[k], after[k]) for k in tensors)
    assert {name: m.training for name, m in model.named_modules()} == modes


def test_size_run_in_a_bare_session_moves_no_buffer_and_no_mode():
    setup = _mixed_mode_cnn()
    before, rng = _state(setup.model), torch.get_rng_state()
    calls = []
    hook = setup.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        size_check.run(Session(setup, device="cpu"), {**size_check.DEFAULTS, "input": "2,3,32,32"})
    finally:
        hook.remove()
    _assert_same(setup.model, before)
    assert torch.equal(torch.get_rng_state(), rng)  # --input is drawn from a private generator
    assert len(calls) == 2  # torchinfo's pass and FlopCounterMode's, nothing more


def test_size_through_the_runner_moves_no_buffer_and_no_mode():
    setup = _mixed_mode_cnn()
    before = _state(setup.model)
    report = run_checks(setup, ["size"], {}, device="cpu")
    assert report.checks[0].status == "pass"
    _assert_same(setup.model, before)


# --------------------------------------------------------------------------- per-layer breakdown

def test_depth_breakdown_heaviest_first():
    report = run_checks_on("simple_cnn", ["size"], settings={"size": {"depth": 2}})
    size = _size(report)
    layers = size["layers"]
    assert [r["flops"] for r in layers] == sorted((r["flops"] for r in layers), reverse=True)
    assert all(r["module"].count(".") < 2 for r in layers)
    top = {r["module"]: r for r in layers if "." not in r["module"]}
    assert top["features"]["flops"] + top["classifier"]["flops"] == size["flops"]
    assert top["classifier"]["params"] == 64 * 16 * 10 + 10
    blocks = [r for r in layers if r["module"].startswith("features.")]
    assert sum(r["flops"] for r in blocks) == top["features"]["flops"]
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(size_section(size))
    text = console.file.getvalue()
    assert "features.0" in text and max(len(line) for line in text.splitlines()) <= 80


def test_no_breakdown_without_depth(reports):
    assert "layers" not in _size(reports["simple_cnn"])


def test_container_never_called_gets_its_members_flops():
    report = run_checks_on("transformer_encoder", ["size"], settings={"size": {"depth": 2}})
    rows = {r["module"]: r for r in _size(report)["layers"]}
    assert rows["encoder.layers"]["flops"] == rows["encoder"]["flops"] > 0.99 * _size(report)["flops"]


# --------------------------------------------------------------------------- CLI and budgets

runner = CliRunner()


def _json(result) -> dict:
    return json.loads(result.stdout)


def test_cli_json_has_every_spec_key():
    result = runner.invoke(app, ["size", sample_path("simple_cnn"), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = _json(result)
    assert SPEC_KEYS <= set(data) and SIZE_KEYS <= set(data["size"])
    model = load_sample("simple_cnn").model
    assert data["size"]["total_params"] == sum(p.numel() for p in model.parameters())
    assert data["size"]["input_size"] == [1, 3, 32, 32]  # the sample's example_input


def test_cli_input_is_honoured():
    one = _json(runner.invoke(app, ["size", sample_path("simple_cnn"), "--format", "json",
                                    "--input", "1,3,32,32"]))
    two = _json(runner.invoke(app, ["size", sample_path("simple_cnn"), "--format", "json",
                                    "--input", "2,3,32,32"]))
    assert one["size"]["input_size"] == [1, 3, 32, 32] and two["size"]["input_size"] == [2, 3, 32, 32]
    assert two["size"]["flops"] == 2 * one["size"]["flops"]


@pytest.mark.parametrize("option,limit,code", [("--max-params", "30000", 1), ("--max-params", "40000", 0),
                                               ("--max-mb", "0.1", 1), ("--max-mb", "1", 0),
                                               ("--max-flops", "5e6", 1), ("--max-flops", "6e6", 0)])
def test_budget_gate(option, limit, code):
    # simple_cnn: 33,946 parameters, 0.136 MB, 5.62 MFLOPs at 1x3x32x32.
    result = runner.invoke(app, ["size", sample_path("simple_cnn"), "--format", "json", option, limit])
    assert result.exit_code == code, result.output
    findings = [f for f in _json(result)["findings"] if f["code"] == "model-too-large"]
    assert len(findings) == code
    if code:
        key = option[2:].replace("-", "_")
        assert findings[0]["severity"] == "error" and findings[0]["evidence"][key] == float(limit)


def test_flops_budget_from_the_config_file(tmp_path):
    config = tmp_path / "nndoctor.yaml"
    config.write_text("size:\n  max_flops: 2M\n")  # YAML reads 2e6 and 2M as strings: both parse
    result = runner.invoke(app, ["size", sample_path("simple_cnn"), "--format", "json",
                                 "--config", str(config)])
    assert result.exit_code == 1, result.output
    [finding] = [f for f in _json(result)["findings"] if f["code"] == "model-too-large"]
    assert finding["evidence"]["max_flops"] == 2e6
    assert finding["evidence"]["flops"] == _json(result)["size"]["flops"] > 2e6


def test_parse_budget():
    assert size_check.parse_budget("1.5G", "max_flops") == 1.5e9
    assert size_check.parse_budget("2e6", "max_flops") == 2e6
    assert size_check.parse_budget(500, "max_params") == 500
    with pytest.raises(ValueError, match="max_flops"):
        size_check.parse_budget("lots", "max_flops")


def test_budgets_with_suffixes_on_the_command_line_and_bad_ones_exit_2(tmp_path):
    result = runner.invoke(app, ["size", sample_path("simple_cnn"), "--format", "json", "--max-flops", "2M"])
    assert result.exit_code == 1, result.output
    [finding] = [f for f in _json(result)["findings"] if f["code"] == "model-too-large"]
    assert finding["evidence"]["max_flops"] == 2e6
    assert "max_flops = 2.00M" in finding["message"]
    result = runner.invoke(app, ["size", sample_path("simple_cnn"), "--max-flops", "lots"])
    assert result.exit_code == 2 and "--max-flops" in result.output
    config = tmp_path / "nndoctor.yaml"
    config.write_text("size:\n  max_params: plenty\n")
    result = runner.invoke(app, ["size", sample_path("simple_cnn"), "--config", str(config)])
    assert result.exit_code == 2 and "size.max_params" in result.output


def test_param_mb_is_the_parameters_real_memory():
    # torchinfo 1.8 leaves nn.MultiheadAttention's in_proj_weight out of its byte count
    report = run_checks_on("transformer_encoder", ["size"])
    model = load_sample("transformer_encoder").model
    real = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    metrics = report.checks[0].metrics
    assert metrics["param_mb"] == round(real, 4) == 2.4177
    assert metrics["torchinfo_param_mb"] < real


class _Output:  # a model output that is neither a tensor, a dict nor a tuple
    def __init__(self, loss, logits):
        self.loss, self.logits = loss, logits


class _ObjectOutputNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(20, 4)

    def forward(self, x, labels=None):
        logits = self.net(x)
        return _Output(None if labels is None else nn.functional.cross_entropy(logits, labels), logits)


def test_an_output_torchinfo_cannot_walk_is_still_sized():
    batches = [{"x": torch.randn(8, 20), "labels": torch.randint(0, 4, (8,))}]
    report = run_checks(Setup(model=_ObjectOutputNet(), train_loader=batches), ["size"], device="cpu")
    check = report.checks[0]
    assert check.status == "pass", check.reason
    assert check.metrics["total_params"] == 84 and check.metrics["mult_adds"] is None
    assert check.metrics["flops"] == 2 * 8 * 20 * 4
    assert check.metrics["torchinfo"].startswith("failed: TypeError")


def test_a_loss_fn_target_without_an_input_shape_skips_size():
    batches = [{"features": torch.randn(8, 20), "y": torch.randint(0, 4, (8,))}]
    setup = Setup(model=nn.Linear(20, 4), train_loader=batches,
                  loss_fn=lambda model, batch: nn.functional.cross_entropy(model(batch["features"]), batch["y"]))
    check = run_checks(setup, ["size"], device="cpu").checks[0]
    assert check.status == "skipped" and "example_input" in check.reason
    setup.example_input = [8, 20]
    check = run_checks(setup, ["size"], device="cpu").checks[0]
    assert check.status == "pass" and check.metrics["flops"] == 2 * 8 * 20 * 4
