"""Healthy: an MLP 784 -> [256, 128] -> 10 on MNIST-shaped synthetic data.

The 784 inputs lie near a 16-dimensional plane (as digit images lie near a
low-dimensional manifold), so 1024 training samples are enough to generalise:
the validation loss falls from ~1.0 to ~0.38 over `fit`'s 5 epochs."""

import torch
import torch.nn as nn

from _data import loader, manifold_classification, split


class MLP(nn.Module):
    def __init__(self, sizes=(784, 256, 128, 10)):
        super().__init__()
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.network = nn.Sequential(*layers)

    def forward(self, x):
        return self.network(x.flatten(1))


def build():
    torch.manual_seed(0)
    x, y = manifold_classification(1280, 784, 10, seed=0)
    (xt, yt), (xv, yv) = split(x, y, 256)
    model = MLP()
    return {
        "model": model,
        "train_loader": loader(xt, yt, batch_size=64),
        "val_loader": loader(xv, yv, batch_size=64, shuffle=False),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
