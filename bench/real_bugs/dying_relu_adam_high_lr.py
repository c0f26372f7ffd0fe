"""Adam at a high learning rate kills a CNN's ReLUs: the loss sticks at ln 10.

Source: "Cross Entropy loss is not decreasing" —
https://discuss.pytorch.org/t/cross-entropy-loss-is-not-decreasing/43814/16

The bug: a small CNN for 10 classes trained with Adam at lr=0.1. The loss stays at
2.30 = ln 10 epoch after epoch; the poster found the parameters almost all negative and
their derivatives all zero: the ReLUs died after the first large steps and pass no
gradient any more.
The fix (the post's solution 2): a smaller learning rate (Adam at 1e-3).
"""

import torch
import torch.nn as nn
from _common import accuracy, learns, loader, seeded, teacher_classification

EXPECTED = [("lr-too-high", None), ("dead-neurons", None)]


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 3 * 3, 64), nn.ReLU(),
                                        nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def _build(lr: float) -> dict:
    seeded()
    # noise images labelled by a linear teacher: learnable, and hard enough that Adam at
    # 0.1 overshoots as in the post (on trivially separable images it still converges)
    x, y = teacher_classification(512, (1, 12, 12), 10, seed=2)
    model = SmallCNN()
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.CrossEntropyLoss(),
            "optimizer": torch.optim.Adam(model.parameters(), lr=lr)}


def buggy() -> dict:
    return _build(lr=0.1)


def fixed() -> dict:
    return _build(lr=1e-3)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 30, lambda: accuracy(s["model"], s["train_loader"]), 0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
