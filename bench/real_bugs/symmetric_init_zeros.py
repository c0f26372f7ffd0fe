"""All weights initialised to zero: the hidden units stay identical and nothing is learned.

Source: "Why don't weights get adjusted when initialized to 0?" —
https://community.deeplearning.ai/t/why-dont-weights-get-adjusted-when-initialized-to-0/431799

The bug (the course's `initialize_parameters_zeros`, ported): a ReLU network whose weights
and biases all start at 0. Every unit of a layer computes the same value and receives the
same gradient, so the units stay identical (and with ReLU at 0 the hidden layers get no
gradient at all); the prediction is 0.5 for every input.
The fix (the thread's answer): break the symmetry with random initialisation (He init for
ReLU layers, as the course's `initialize_parameters_he`).
"""

import torch
import torch.nn as nn
from _common import accuracy, generator, learns, loader, seeded

EXPECTED = [("symmetric-init", None)]


def _data():
    """Two concentric circles (the course's 'flower'/circles data)."""
    g = generator(14)
    n = 512
    radius = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, 2.0)
    angle = 6.2832 * torch.rand(n, generator=g)
    x = torch.stack([radius * angle.cos(), radius * angle.sin()], 1) + 0.15 * torch.randn(n, 2, generator=g)
    return x, (radius > 1.5).float()[:, None]


def _build(zeros: bool) -> dict:
    seeded()
    model = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 1))
    for layer in model:
        if isinstance(layer, nn.Linear):
            if zeros:
                nn.init.zeros_(layer.weight)
            else:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return {"model": model, "train_loader": loader(*_data(), batch_size=64),
            "criterion": nn.BCEWithLogitsLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2)}


def buggy() -> dict:
    return _build(zeros=True)


def fixed() -> dict:
    return _build(zeros=False)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 30, lambda: accuracy(s["model"], s["train_loader"], lambda o: (o > 0).float()),
                  0.95, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
