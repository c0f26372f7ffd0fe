"""Broken: a regression on raw targets in the hundreds (a price-like target, 20-380).

Bug: the targets are not standardised. The output layer starts at unit scale, so the
first MSE is ~4e4 and the LR that suits the weights moves the output by far too little.
Expected: `unscaled-targets` (a warning) from the `static` check, `where` = the loader.
"""

import torch
import torch.nn as nn

from _data import loader


def build():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(14)
    x = torch.randn(512, 8, generator=g)
    y = 200 + 60 * (x @ torch.randn(8, 1, generator=g)) / 8 ** 0.5  # the bug: never standardised
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 1))
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "criterion": nn.MSELoss(),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
