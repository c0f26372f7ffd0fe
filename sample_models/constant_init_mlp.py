"""Broken: every Linear layer initialised to one constant (nn.init.constant_).

Bug: all units of a hidden layer compute the same function and get the same gradient, so
they stay identical: each hidden layer acts as a single unit. Expected: `symmetric-init`
from the `static` check at the first hidden layer, `0`.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (20,), 5, seed=20)
    model = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 5))
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.constant_(layer.weight, 0.05)  # the bug: a constant instead of a random init
            nn.init.zeros_(layer.bias)
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
