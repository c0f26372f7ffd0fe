"""Healthy: a classifier with a Keras-tutorial init (normal, sigma 0.05, zero biases) at
Adam 3e-4, the setup of many ported Keras programs.

The small init and the small LR make it slow at first: on one batch of 32 it is still
near ln 10 after 100 steps and memorises it only by step ~400, while it learns the task
within its 5 epochs (issue 13 item 1: `cannot-overfit` and `underfitting` fired on it).
Expected: no finding.
"""

import torch
import torch.nn as nn

from _data import loader, split, teacher_classification

KERAS_STD = 0.05  # keras.initializers.RandomNormal(stddev=0.05)


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(2304, (20,), 10, seed=21)
    (xt, yt), (xv, yv) = split(x, y, 256)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=KERAS_STD)
            nn.init.zeros_(layer.bias)
    return {
        "model": model,
        "train_loader": loader(xt, yt, batch_size=32),
        "val_loader": loader(xv, yv, batch_size=256, shuffle=False),
        "optimizer": torch.optim.Adam(model.parameters(), lr=3e-4),
    }
