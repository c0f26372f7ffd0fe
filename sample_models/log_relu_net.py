"""Broken: `torch.log` of a ReLU output inside `forward` (module `features`).

ReLU zeroes about half the units and log(0) = -inf, so the very first forward
pass is non-finite. Expected: `non-finite` with where = `features` and the op
`log` named. Fix: `torch.log(x + eps)`, or a softplus instead of ReLU + log.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class LogFeatures(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.linear = nn.Linear(cin, cout)
        self.relu = nn.ReLU()

    def forward(self, x):
        return torch.log(self.relu(self.linear(x)))  # bug: log(0) = -inf for every unit ReLU zeroed


class LogReluNet(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.features = LogFeatures(20, 64)
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        return self.head(self.features(x))


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(256, (20,), 4, seed=5)
    model = LogReluNet()
    return {"model": model, "train_loader": loader(x, y, batch_size=32)}
