"""Broken: a layer (`extra`) defined in `__init__` but never called in `forward`.

Its parameters get no gradient (and waste memory). Expected: `no-gradient`
with where = `extra`. Fix: call the layer, or delete it.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class UnusedLayerNet(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.hidden = nn.Linear(20, 64)
        self.extra = nn.Linear(64, 64)  # bug: never used in forward
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        return self.head(torch.relu(self.hidden(x)))


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(256, (20,), 4, seed=8)
    model = UnusedLayerNet()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2),
    }
