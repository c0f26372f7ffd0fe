"""Broken: dead-neurons. An MLP 20 -> 64 -> 64 -> 4 whose second hidden Linear (`network.2`)
has its bias initialised to -0.9 ("to make the activations sparse").

Its pre-activations w·x spread only about ±0.3 around the bias, so most units of the
ReLU after it (`network.3`) are negative on every input: they never fire, pass no
gradient and never recover. Expected: `dead-neurons` at `network.3` (~80-95% dead).
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification

HIDDEN_BIAS = -0.9  # the bug: far below the spread of the layer's pre-activations


class DeadReluMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.network = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                     nn.Linear(64, 4))
        nn.init.constant_(self.network[2].bias, HIDDEN_BIAS)

    def forward(self, x):
        return self.network(x)


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (20,), 4, seed=4)
    model = DeadReluMLP()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
