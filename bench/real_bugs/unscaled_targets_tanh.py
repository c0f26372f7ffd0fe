"""Regression targets around -2700 for a small tanh network: it only learns their mean.

Source: "Scaling target variables" — https://discuss.pytorch.org/t/scaling-target-variables/41046

The bug: inputs scaled to [-1, 1], targets all around -2700, two tanh hidden layers of 5
units with Xavier init and a linear output. Unscaled, the model "steadies off at
predictions being just the mean of all the targets"; scaled to [0, 1] it trains. The
answer: the outputs start far from the targets, the loss and gradients are huge, and the
weights are pushed into tanh's saturation where learning stops.
The fix (the answer): scale the targets (here to [0, 1], as the poster did), or
initialise the output near the targets' mean.
"""

import torch
import torch.nn as nn
from _common import generator, learns, loader, r2, seeded

EXPECTED = [("unscaled-targets", None)]


def _data():
    g = generator(17)
    x = torch.rand(512, 4, generator=g) * 2 - 1
    y = -2700 + 40 * torch.sin(2 * x[:, :1]) + 25 * x[:, 1:2] * x[:, 2:3]
    return x, y


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 1))
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
    return model


def buggy() -> dict:
    seeded()
    x, y = _data()
    model = _model()
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.MSELoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2)}


LOW, HIGH = -2700 - 70, -2700 + 70  # the targets' range, for the [0, 1] scaling


def fixed() -> dict:
    seeded()
    x, y = _data()
    model = _model()
    return {"model": model, "train_loader": loader(x, (y - LOW) / (HIGH - LOW), batch_size=32),
            "criterion": nn.MSELoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2)}


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 40, lambda: r2(s["model"], s["train_loader"]), 0.8, "r2")


if __name__ == "__main__":
    print(verify_fixed())
