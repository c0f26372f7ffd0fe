"""Softmax vs sigmoid: a men/women CNN stuck at 50% accuracy with Dense(1, softmax).

Source: "Activation functions: Softmax vs Sigmoid" —
https://techqa.club/v/q/activation-functions-softmax-vs-sigmoid-65258468

The bug (Keras, ported): Conv2D/MaxPool/BatchNorm blocks, Dense(64), then
`Dense(1, activation='softmax')` with binary_crossentropy. Accuracy 0.5019 and loss 7.59
in every epoch; with a sigmoid, 0.98. One-unit softmax is constantly 1: the output cannot
depend on the input and no gradient flows back.
The fix (the answer): for binary classification, one output neuron with a sigmoid (here
the logit into BCEWithLogitsLoss), or K=2 softmax outputs.
"""

import torch
import torch.nn as nn
from _common import accuracy, blob_images, learns, loader, seeded

EXPECTED = [("single-unit-softmax", "classifier.3")]


class Net(nn.Module):
    def __init__(self, softmax: bool):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(16),
            nn.Conv2d(16, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(16))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 2 * 2, 64), nn.Linear(64, 1),
                                        *([nn.Softmax(dim=1)] if softmax else []))

    def forward(self, x):
        return self.classifier(self.features(x))


def _build(softmax: bool) -> dict:
    seeded()
    x, y = blob_images(256, 3, 16, 2, seed=4)
    model = Net(softmax)
    return {"model": model, "train_loader": loader(x, y.float()[:, None], batch_size=32),
            "criterion": nn.BCELoss() if softmax else nn.BCEWithLogitsLoss(),
            "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def buggy() -> dict:
    return _build(softmax=True)


def fixed() -> dict:
    return _build(softmax=False)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 10, lambda: accuracy(s["model"], s["train_loader"], lambda o: (o > 0).float()),
                  0.95, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
