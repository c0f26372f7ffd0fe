"""Broken: the labels run up to 12 (13 classes) but the head has 10 outputs.

Bug: `nn.Linear(64, 10)` was written for a 10-class dataset; this one has 13
classes. CrossEntropyLoss crashes on the first label >= 10 ("Target 12 is out of
bounds", or an opaque device-side assert on CUDA). Expected: `label-out-of-range`
from the `data` check, `where` = the output layer `network.2`, found before any
loss is computed.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification

CLASSES_IN_DATA = 13
OUTPUTS = 10  # the bug: should be CLASSES_IN_DATA


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.network = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, OUTPUTS))

    def forward(self, x):
        return self.network(x)


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (32,), CLASSES_IN_DATA, seed=4)
    model = MLP()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
