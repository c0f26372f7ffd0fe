"""Broken: an MLP initialised with `nn.init.normal_(weight, std=1.0)` and no normalisation.

std=1 is ~6x He's sqrt(2 / fan_in) for these 64-wide layers, so every layer multiplies
the signal, and on the way back the gradient, by ~6: the logits start near 1e4-1e5,
the first loss near 2e4 and the total gradient norm at 2e4. (Adam's normalised steps
still memorise one batch; SGD would diverge.) Expected: `exploding-gradient` (grads).
Fix: default or He init (`nn.init.kaiming_normal_`), normalisation layers, clipping.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class ExplodingGradMLP(nn.Module):
    def __init__(self, features=16, width=64, depth=6, classes=4):
        super().__init__()
        layers = []
        for i in range(depth - 1):
            layers += [nn.Linear(features if i == 0 else width, width), nn.ReLU()]
        layers.append(nn.Linear(width, classes))
        self.network = nn.Sequential(*layers)
        for layer in self.network:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=1.0)  # bug: far too large for fan_in 64
                nn.init.zeros_(layer.bias)

    def forward(self, x):
        return self.network(x)


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(256, (16,), 4, seed=11)
    model = ExplodingGradMLP()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
