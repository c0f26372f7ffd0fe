"""Healthy: the XOR MLP (2 -> 8 -> 1), Adam lr 0.1, BCE on logits."""

import torch
import torch.nn as nn

from _data import loader


def build():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    corners = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    idx = torch.randint(0, 4, (256,), generator=g)
    x = corners[idx] * 2 - 1 + 0.05 * torch.randn(256, 2, generator=g)  # centred at ±1
    y = (corners[idx, 0] != corners[idx, 1]).float().unsqueeze(1)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "criterion": nn.BCEWithLogitsLoss(),
        "optimizer": torch.optim.Adam(model.parameters(), lr=0.1),
    }
