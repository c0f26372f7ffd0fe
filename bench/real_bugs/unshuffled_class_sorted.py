"""Training on label-ordered data without shuffling: the model fails to converge.

Source: "Why Is It Important To Shuffle Your Dataset Before Training An ML Model" —
https://dailydoseofds.beehiiv.com/p/why-is-it-important-to-shuffle-your

The bug: the dataset is ordered by label and fed in that order, so every batch holds a
single class; each run of batches pulls the model towards predicting that class, and the
network trained on label-ordered data fails to converge where the same network on
shuffled data learns.
The fix (the post's): shuffle the training data (and re-shuffle every epoch:
`DataLoader(..., shuffle=True)`).
"""

import torch
import torch.nn as nn
from _common import accuracy, learns, loader, seeded, teacher_classification

EXPECTED = [("unshuffled-data", None)]


def _build(shuffle: bool) -> dict:
    seeded()
    x, y = teacher_classification(512, 10, 4, seed=13)
    order = torch.argsort(y, stable=True)  # the dataset as stored: sorted by label
    x, y = x[order], y[order]
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 4))
    return {"model": model, "train_loader": loader(x, y, batch_size=32, shuffle=shuffle),
            "criterion": nn.CrossEntropyLoss(), "optimizer": torch.optim.SGD(model.parameters(), lr=0.05)}


def buggy() -> dict:
    return _build(shuffle=False)


def fixed() -> dict:
    return _build(shuffle=True)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 20, lambda: accuracy(s["model"], s["train_loader"]), 0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
