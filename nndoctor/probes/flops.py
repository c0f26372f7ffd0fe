"""FLOPs of one forward pass: torch's FlopCounterMode, plus formulas for the kernels it lacks.

The convention is FlopCounterMode's: 2 FLOPs per multiply-add of a matmul,
convolution or attention product; bias adds, activations, norms and other
elementwise work count 0. `FlopCounterMode` has no formula for the fused
recurrent kernels (an `nn.LSTM` on CPU runs `aten.mkldnn_rnn_layer`, every
RNN on CUDA `aten._cudnn_rnn`) nor for CPU attention
(`aten._scaled_dot_product_flash_attention_for_cpu`), so it counts them as 0.
We give it formulas for those ops (its `custom_mapping`), not per-module hooks:
where PyTorch decomposes the same layer into `mm`/`addmm` instead (GRU and
RNN on CPU, LSTM with `proj_size`, oneDNN off) FlopCounterMode already counts
it, and an op-level formula cannot count it twice. Counting per op also keeps
the per-module breakdown FlopCounterMode gives for free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


# --------------------------------------------------------------------------- formulas
# FlopCounterMode hands each formula the op's arguments with tensors replaced by
# their shapes (lists of tensors by lists of shapes), and the output's shape.

def _rnn_tokens(input_shape) -> int:
    """Time steps × batch: (T, B, in), (B, T, in), or (tokens, in) for a PackedSequence."""
    return prod(input_shape[:-1])


def rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs) -> int:
    """`aten.mkldnn_rnn_layer`: one layer, one direction. Per token, x·W_ihᵀ and h·W_hhᵀ:
    gates·h·(in + h) multiply-adds, i.e. the two weights' sizes."""
    return 2 * _rnn_tokens(input_shape) * (prod(w_ih_shape) + prod(w_hh_shape))


def rnn_stack_flop(input_shape, weight_shapes, *args, out_shape=None, **kwargs) -> int:
    """`aten._cudnn_rnn` / `aten.miopen_rnn` / `aten._lstm_mps`: every layer and direction at once.

    The flat weight list holds, per layer and direction, W_ih, W_hh, (b_ih, b_hh),
    (W_hr for an LSTM with proj_size). Each 2-D weight is one matmul per token;
    every layer and direction sees every token once.
    """
    return 2 * _rnn_tokens(input_shape) * sum(prod(w) for w in weight_shapes if len(w) == 2)


def lstm_mps_flop(input_shape, hx_shapes, param_shapes, *args, out_shape=None, **kwargs) -> int:
    return rnn_stack_flop(input_shape, param_shapes)


def attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Q·Kᵀ and softmax(·)·V, as torch's own sdpa formula: (…, L, E) × (…, S, E) and (…, S, Ev)."""
    batch = prod(query_shape[:-2])
    length, embed = query_shape[-2], query_shape[-1]
    source, value_embed = key_shape[-2], value_shape[-1]
    return 2 * batch * length * source * embed + 2 * batch * length * source * value_embed


EXTRA_FORMULAS = {
    aten.mkldnn_rnn_layer: rnn_layer_flop,  # nn.LSTM on CPU (oneDNN)
    aten._cudnn_rnn: rnn_stack_flop,  # LSTM/GRU/RNN on CUDA
    aten.miopen_rnn: rnn_stack_flop,  # ... on ROCm
    aten._lstm_mps: lstm_mps_flop,  # nn.LSTM on Apple MPS
    aten._scaled_dot_product_flash_attention_for_cpu: attention_flop,  # F.scaled_dot_product_attention, CPU
    aten._scaled_dot_product_attention_math_for_mps: attention_flop,
    aten._scaled_dot_product_fused_attention_overrideable: attention_flop,  # XPU and other backends
}


# --------------------------------------------------------------------------- counting

@dataclass
class FlopCount:
    total: int
    by_module: dict = field(default_factory=dict)  # module path ("" = the model) -> FLOPs, inclusive
    ops: dict = field(default_factory=dict)  # module path -> {op name: FLOPs}, inclusive


def count_flops(model: nn.Module, args: tuple, kwargs: dict) -> FlopCount:
    """FLOPs of one forward pass in eval mode, under no_grad, with the fused fast paths off.

    The fast path (`torch.backends.mha`) runs an eval-mode TransformerEncoderLayer
    as one fused kernel that FlopCounterMode sees as ~0 FLOPs; turned off, the
    same layer runs as matmuls it can count. The setting and every module's
    train/eval flag are restored afterwards.
    """
    training = [(m, m.training) for m in model.modules()]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        model.eval()
        with torch.no_grad(), counter:
            model(*args, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for module, mode in training:
            module.training = mode
    return _by_module_path(model, counter)


def _by_module_path(model: nn.Module, counter: FlopCounterMode) -> FlopCount:
    # FlopCounterMode keys modules by class name of the root plus the child path
    # ("TextClassifier.lstm"); map them back to the paths of named_modules().
    root = type(model).__name__
    paths = {root: ""}
    paths.update({f"{root}.{name}": name for name, _ in model.named_modules() if name})
    counts = counter.get_flop_counts()
    flops, ops = {}, {}
    for key, by_op in counts.items():
        path = paths.get(key)
        if path is None:
            continue
        ops[path] = {str(op): int(n) for op, n in by_op.items()}
        flops[path] = sum(ops[path].values())
    return FlopCount(total=int(counter.get_total_flops()), by_module=flops, ops=ops)
