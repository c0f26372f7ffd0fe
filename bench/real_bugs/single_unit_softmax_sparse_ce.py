"""Dense(1, activation='softmax') with sparse_categorical_crossentropy on labels 0 ... 6.

Source: "Range [0, 1) znamená každé číslo mezi 0 a 1, s výjimkou 1" —
https://python.19633.com/cs/python-tag-9/Keras-9/1009048621.html

The bug (Keras, ported): the last layer is `Dense(1, activation='softmax')` while the
labels are classes 0 ... 6 for sparse categorical cross-entropy. One output neuron with a
softmax is a "unary" classifier: it always outputs 1, and labels 1 ... 6 name outputs
that do not exist.
The fix (the answer): as many output neurons as classes, `Dense(7, activation='softmax')`
(in PyTorch: 7 logits into CrossEntropyLoss).
"""

import torch
import torch.nn as nn
from _common import accuracy, learns, loader, seeded, teacher_classification

EXPECTED = [("single-unit-softmax", "net.3"), ("label-out-of-range", "net.2")]

CLASSES = 7


class Net(nn.Module):
    def __init__(self, outputs: int, softmax: bool):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, outputs),
                                 *([nn.LogSoftmax(dim=1)] if softmax else []))

    def forward(self, x):
        return self.net(x)


def _build(outputs: int, softmax: bool) -> dict:
    seeded()
    x, y = teacher_classification(512, 16, CLASSES, seed=16)
    model = Net(outputs, softmax)
    # Keras's sparse CE on a softmax output is NLL of its log: LogSoftmax + NLLLoss
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.NLLLoss() if softmax else nn.CrossEntropyLoss(),
            "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def buggy() -> dict:
    return _build(outputs=1, softmax=True)


def fixed() -> dict:
    return _build(outputs=CLASSES, softmax=False)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 30, lambda: accuracy(s["model"], s["train_loader"]), 0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
