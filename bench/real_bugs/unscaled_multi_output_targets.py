"""A 16-value regression target whose 1st and 4th values are ~12000 and the rest ~1.

Source: "How to deal with the labels having drastically different values?" —
https://discuss.pytorch.org/t/how-to-deal-with-the-labels-having-drastically-different-values/116598

The bug: images in, a vector of 16 targets out, MSE loss; two of the 16 targets are four
orders of magnitude larger than the others. The answer: with plain MSE the model
neglects every dimension but the two large ones.
The fix (the answer): standardise every target dimension separately (mean 0, std 1).
"""

import torch
import torch.nn as nn
from _common import generator, learns, loader, r2, seeded

EXPECTED = [("unscaled-targets", None)]


def _data():
    """8x8 'images' whose 16 targets are linear-plus-tanh readouts at the post's scales."""
    g = generator(18)
    n = 512
    x = torch.randn(n, 1, 8, 8, generator=g)
    w = torch.randn(64, 16, generator=g) / 8
    y = torch.tanh(x.reshape(n, 64) @ w) * 0.5 + 1.0
    y[:, 0] = 12000 + 500 * y[:, 0]
    y[:, 3] = 11500 + 500 * y[:, 3]
    return x, y


def _model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 16))


def buggy() -> dict:
    seeded()
    model = _model()
    return {"model": model, "train_loader": loader(*_data(), batch_size=32),
            "criterion": nn.MSELoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def fixed() -> dict:
    seeded()
    x, y = _data()
    y = (y - y.mean(0)) / y.std(0)
    model = _model()
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.MSELoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 20, lambda: r2(s["model"], s["train_loader"]), 0.8, "r2")


if __name__ == "__main__":
    print(verify_fixed())
