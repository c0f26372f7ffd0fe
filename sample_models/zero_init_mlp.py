"""Broken: an MLP whose init function sets every Linear weight to zero.

Bug: `init_weights` zeroes the weights (a frequent forum question: "why doesn't my network
learn when I initialise the weights to 0?"). Every hidden layer's output is then its
bias, the same for every sample: the signal's std over the batch is exactly 0 from the
first layer on, and the hidden layers get no gradient at the first step (the zero weights
above them pass none back); Adam then moves them all alike.
Expected: `bad-init` at the first layer, `0`, whose output no longer depends on the input
(std 0 over the batch, its input's ~0.97); the stalled loss (`cannot-overfit`) follows.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


def init_weights(module):
    if isinstance(module, nn.Linear):
        nn.init.zeros_(module.weight)  # the bug: symmetric and input-blind; use the default init


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (16,), 4, seed=12)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    model.apply(init_weights)
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=64),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
