"""Broken: a 15-layer sigmoid MLP with PyTorch's default init and no normalisation.

Each sigmoid scales the backward signal by at most 1/4, so after 14 of them the
first layers' gradients are many orders of magnitude below the last layer's.
Expected: `vanishing-gradient` with where = `network.0`. Fix: ReLU, residual
connections, normalisation, proper init.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification

DEPTH = 15


class DeepSigmoidMLP(nn.Module):
    def __init__(self, features=32, width=64, classes=4, depth=DEPTH):
        super().__init__()
        layers = []
        for i in range(depth - 1):
            layers += [nn.Linear(features if i == 0 else width, width), nn.Sigmoid()]
        layers.append(nn.Linear(width, classes))
        self.network = nn.Sequential(*layers)

    def forward(self, x):
        return self.network(x)


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(256, (32,), 4, seed=10)
    model = DeepSigmoidMLP()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
    }
