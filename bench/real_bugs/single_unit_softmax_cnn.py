"""A CNN whose output layer is Dense(1, activation='softmax'): the prediction is always 1.

Source: "Convolutional neural network fails even when given answer" —
https://stats.stackexchange.com/questions/481881/convolutional-neural-network-fails-even-when-given-answer?noredirect=1

The bug (Keras, ported): two Conv2D+ReLU layers, Flatten, `Dense(1, activation='softmax')`
for a boolean target, trained with a cross-entropy loss. A softmax over one unit is
exp(x)/exp(x) = 1 for every input, so the model predicts "true" for everything and the
gradient through the output is exactly 0, even when the answer is in the input.
The fix (the accepted answer): a sigmoid on the single output unit for binary
classification — in PyTorch, the raw logit into BCEWithLogitsLoss.
"""

import torch
import torch.nn as nn
from _common import accuracy, generator, learns, loader, seeded

EXPECTED = [("single-unit-softmax", "head.2")]


def _data():
    """(N, 2, 12, 8) inputs whose 3rd-axis channel 1 holds the boolean answer, as in the post."""
    g = generator(3)
    n = 256
    y = (torch.rand(n, generator=g) < 0.5).float()
    x = torch.randn(n, 2, 12, 8, generator=g)
    x[:, 1] = y[:, None, None] * 2 - 1 + 0.1 * x[:, 1]
    return x, y[:, None]


class Net(nn.Module):
    def __init__(self, softmax: bool):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(2, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 4, 1),
                                  *([nn.Softmax(dim=1)] if softmax else []))

    def forward(self, x):
        return self.head(self.features(x))


def buggy() -> dict:
    seeded()
    x, y = _data()
    model = Net(softmax=True)
    # Keras's categorical cross-entropy on a one-unit probability: -y * log(p)
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.BCELoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def fixed() -> dict:
    seeded()
    x, y = _data()
    model = Net(softmax=False)
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.BCEWithLogitsLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 10, lambda: accuracy(s["model"], s["train_loader"], lambda o: (o > 0).float()),
                  0.95, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
