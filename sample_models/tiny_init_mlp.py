"""Broken: a 6-layer ReLU MLP whose weights were initialised x0.01.

Bug: after PyTorch's default init every weight is multiplied by 0.01 (a
misremembered "small random weights" recipe). Each layer then shrinks the
input-dependent signal ~250x, so it vanishes within a few layers: the output
barely depends on the input and the gradients to the early layers vanish.
Expected: `bad-init` from the `init` check, `where` = `layers.2`, the hidden
layer where the signal has fallen more than 10^4 x below the first layer's.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification

WIDTH, DEPTH = 128, 6


class DeepMLP(nn.Module):
    def __init__(self, features=32, classes=10):
        super().__init__()
        sizes = [features] + [WIDTH] * (DEPTH - 1) + [classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.mul_(0.01)  # the bug: use kaiming_normal_ (He init) instead

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (32,), 10, seed=8)
    model = DeepMLP()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
