"""Broken: a `.detach()` in `forward` cuts the encoder off from the loss.

Only the head trains; the encoder's parameters never receive a gradient.
Expected: `no-gradient` with where = `encoder`. Fix: remove the `.detach()`.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class DetachedHeadNet(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        features = self.encoder(x).detach()  # bug: no gradient flows back into the encoder
        return self.head(features)


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(256, (20,), 4, seed=7)
    model = DetachedHeadNet()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2),
    }
