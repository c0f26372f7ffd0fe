"""Broken: an MLP whose output layer's weights were scaled x100 at init.

Bug: the last layer is initialised 100x too large, so the untrained model is
confidently wrong: its first loss is tens of times ln 10 = 2.30, and the first
steps are spent shrinking the logits instead of learning. Expected: `init-loss`
from the `init` check, `where` = the output layer `head`.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class MLP(nn.Module):
    def __init__(self, features=64, classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
        self.head = nn.Linear(128, classes)
        with torch.no_grad():
            self.head.weight.mul_(100)  # the bug: leave the default init (or scale it down)

    def forward(self, x):
        return self.head(self.body(x))


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (64,), 10, seed=9)
    model = MLP()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
