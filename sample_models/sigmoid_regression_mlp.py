"""Broken: a regression MLP whose output ends in a sigmoid, on standardised targets.

Bug: the sigmoid caps predictions to (0, 1), but the targets are centred on 0 with unit
spread: every negative target (about half) and every target above 1 is out of reach.
Expected: `output-range-mismatch` from the `static` check at the sigmoid, `3`.
"""

import torch
import torch.nn as nn

from _data import loader


def build():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(13)
    x = torch.randn(512, 8, generator=g)
    y = torch.tanh(x @ torch.randn(8, 1, generator=g) / 2) * 2  # a smooth target in (-2, 2)
    y = (y - y.mean()) / y.std()
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 1), nn.Sigmoid())  # the bug
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "criterion": nn.MSELoss(),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
