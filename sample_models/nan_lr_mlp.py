"""Broken: a regression MLP trained by SGD with a far-too-high LR (lr=1.0 on unit-scale data).

Every step overshoots the minimum by more than it corrects, so the loss and the
gradients grow geometrically (13 -> 37 -> 7e4 -> 2e14) until the loss overflows
to Inf at the 4th step. Expected: `non-finite` (nan), with `exploding-gradient`
(grads) as the related symptom. Fix: lower the LR (1e-2 trains it) or clip gradients.
"""

import torch
import torch.nn as nn

from _data import loader


def build():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(256, 16, generator=g)
    y = x @ torch.randn(16, 1, generator=g) + 0.1 * torch.randn(256, 1, generator=g)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "criterion": nn.MSELoss(),
        "optimizer": torch.optim.SGD(model.parameters(), lr=1.0),  # bug: far too high
    }
