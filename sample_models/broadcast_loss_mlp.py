"""Broken: a regression whose output is (B, 1) and whose targets are (B,).

Bug: MSELoss broadcasts (32, 1) against (32,) to (32, 32), comparing every prediction with
every target; PyTorch only warns. The model learns the targets' mean. Expected:
`shape-broadcast` from the `static` check at the output layer, `2`.
"""

import torch
import torch.nn as nn

from _data import loader


def build():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(15)
    x = torch.randn(512, 8, generator=g)
    y = x @ torch.randn(8, generator=g) / 8 ** 0.5  # the bug: shape (512,), the output is (B, 1)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 1))
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "criterion": nn.MSELoss(),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
