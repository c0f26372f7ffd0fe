"""Broken: dead-neurons through a functional activation. Two blocks that call `F.relu`
inside their `forward` (no nn.ReLU module anywhere); the second block's Linear has its
bias initialised to -0.9.

Its pre-activations spread only about ±0.3 around the bias, so most units of the F.relu
in `block2.forward` never fire. Module hooks cannot see that call; nndoctor reports it as
`block2:relu#0` (the first relu called in block2's forward). Expected: `dead-neurons` at
`block2:relu#0`.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from _data import loader, teacher_classification

HIDDEN_BIAS = -0.9  # the bug: far below the spread of the layer's pre-activations


class Block(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, x):
        return F.relu(self.linear(x))


class FunctionalReluNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = Block(20, 64)
        self.block2 = Block(64, 64)
        self.head = nn.Linear(64, 4)
        nn.init.constant_(self.block2.linear.bias, HIDDEN_BIAS)

    def forward(self, x):
        return self.head(self.block2(self.block1(x)))


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (20,), 4, seed=5)
    model = FunctionalReluNet()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
