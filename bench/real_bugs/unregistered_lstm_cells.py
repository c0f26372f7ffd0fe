"""A meta-optimizer's LSTM cells appended to a Python list: their weights are never optimised.

Source: "LSTM weights not optimised" — https://github.com/ikostrikov/pytorch-meta-optimizer/issues/11

The bug: `MetaOptimizer.__init__` appends its `LayerNormLSTMCell`s to `self.lstms = []`;
they are not registered, so `meta_optimizer.parameters()` misses them and the LSTM
weights stay at their random init for the whole run.
The fix (the reporter's quick fix, confirmed to work): hold the cells in a registered
container (`nn.Sequential(*[...])`; here `nn.ModuleList`).
"""

import torch
import torch.nn as nn
from _common import generator, learns, loader, r2, seeded, teacher_regression

EXPECTED = [("unregistered-module", "lstms")]

HIDDEN, LAYERS, T, F_IN = 16, 2, 3, 8


class StackedCells(nn.Module):
    """LSTM cells stepped over a sequence with their (h, c) carried from step to step, as
    the meta-optimizer steps them once per optimisation step, then a linear readout."""

    def __init__(self, register: bool):
        super().__init__()
        self.linear1 = nn.Linear(F_IN, HIDDEN)
        cells = [nn.LSTMCell(HIDDEN, HIDDEN) for _ in range(LAYERS)]
        self.lstms = nn.ModuleList(cells) if register else cells
        self.linear2 = nn.Linear(HIDDEN, 1)

    def forward(self, x):  # x: (B, T, F_IN)
        states = [None] * LAYERS
        for t in range(x.shape[1]):
            h = torch.tanh(self.linear1(x[:, t]))
            for i, cell in enumerate(self.lstms):
                states[i] = cell(h, states[i])
                h = states[i][0]
        return self.linear2(h)


def _data():
    """y: a smooth function of the sequence's summed steps (unit scale)."""
    x, y = teacher_regression(512, F_IN, seed=10)
    g = generator(10)
    steps = x[:, None] / T + 0.1 * torch.randn(512, T, F_IN, generator=g)
    return steps, y


def _build(register: bool) -> dict:
    seeded()
    model = StackedCells(register)
    return {"model": model, "train_loader": loader(*_data(), batch_size=32),
            "criterion": nn.MSELoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=3e-3)}


def buggy() -> dict:
    return _build(register=False)


def fixed() -> dict:
    return _build(register=True)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 20, lambda: r2(s["model"], s["train_loader"]), 0.8, "r2")


if __name__ == "__main__":
    print(verify_fixed())
