"""Broken: `F.dropout(x, 0.5)` in a block's forward, without `training=self.training`.

Bug: F.dropout defaults to training=True, so model.eval() leaves the dropout on:
validation and inference stay random. Expected: `dropout-in-eval` from the `static`
check in the block that calls it, `block`.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from _data import loader, teacher_classification


class Block(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.linear = nn.Linear(features, features)

    def forward(self, x):
        return F.dropout(F.relu(self.linear(x)), 0.5)  # the bug: training=self.training missing


class Classifier(nn.Module):
    def __init__(self, features=20, hidden=64, classes=5):
        super().__init__()
        self.stem = nn.Linear(features, hidden)
        self.block = Block(hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.block(F.relu(self.stem(x))))


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (20,), 5, seed=17)
    model = Classifier()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
