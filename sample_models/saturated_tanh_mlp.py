"""Broken: saturated-activations. A tanh MLP 32 -> 64 -> 64 -> 10 whose hidden Linears are
initialised with N(0, 1) weights (`nn.init.normal_(w)`, i.e. `torch.randn`) instead of a
1/sqrt(fan_in) scale.

Pre-activations then have a standard deviation of sqrt(fan_in) ≈ 6-8 instead of ≈ 1, so
most tanh outputs sit within 0.01 of ±1, where tanh' < 0.02: the gradient barely passes.
Expected: `saturated-activations` at the tanh modules `network.1` and `network.3`.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class SaturatedTanhMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.network = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                                     nn.Linear(64, 10))
        for hidden in (self.network[0], self.network[2]):
            nn.init.normal_(hidden.weight, std=1.0)  # the bug: should be ~1/sqrt(fan_in)

    def forward(self, x):
        return self.network(x)


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (32,), 10, seed=6)
    model = SaturatedTanhMLP()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
