"""Broken: the optimizer is built over the head's parameters only.

The body gets gradients but is never updated. Expected: `not-in-optimizer`
with where = `body`. Fix: `torch.optim.Adam(model.parameters(), ...)`.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class PartialOptimizerMLP(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        return self.head(self.body(x))


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(256, (20,), 4, seed=9)
    model = PartialOptimizerMLP()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.head.parameters(), lr=1e-2),  # bug: the body is left out
    }
