"""Softmax output fed to nn.CrossEntropyLoss.

Source: "Resolving PyTorch Classification Loss Issues: Logits vs. Probabilities in
nn.CrossEntropyLoss" — https://openillumi.com/?p=73112

The bug: the classifier ends in `nn.Softmax(dim=1)` and its probabilities go to
`nn.CrossEntropyLoss`, which applies log-softmax itself. The double softmax squashes the
logits' range, so the loss cannot approach 0 and the gradients shrink as the model grows
confident (the post: a perfect one-hot probability vector still costs 0.74).
The fix (the post's answer): pass the raw logits of the last Linear to CrossEntropyLoss.
"""

import torch
import torch.nn as nn
from _common import accuracy, learns, loader, seeded, teacher_classification

EXPECTED = [("output-activation-mismatch", "net.5")]


def _build(softmax: bool) -> dict:
    seeded()
    x, y = teacher_classification(512, 20, 4, seed=1)
    layers = [nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)]
    model = nn.Sequential()
    model.add_module("net", nn.Sequential(*layers, *([nn.Softmax(dim=1)] if softmax else [])))
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.CrossEntropyLoss(),
            "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def buggy() -> dict:
    return _build(softmax=True)


def fixed() -> dict:
    return _build(softmax=False)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 20, lambda: accuracy(s["model"], s["train_loader"]), 0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
