"""Broken: a binary classifier whose single output unit goes through a softmax.

Bug: `Dense(1, activation='softmax')` ported to PyTorch. A softmax over one unit is exactly
1 for every sample: the loss does not depend on the weights and every gradient is exactly
0. Expected: `single-unit-softmax` from the `static` check at the softmax, `head.1`; the
zero gradients are `no-gradient`'s, the loss that cannot move `cannot-overfit`'s.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class Classifier(nn.Module):
    def __init__(self, features=20):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, 32), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(32, 1), nn.Softmax(dim=1))  # the bug: nn.Sigmoid()

    def forward(self, x):
        return self.head(self.body(x))


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (20,), 2, seed=12)
    model = Classifier()
    return {
        "model": model,
        "train_loader": loader(x, y.float().unsqueeze(1), batch_size=32),
        "criterion": nn.BCELoss(),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
