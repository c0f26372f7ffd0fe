"""F.dropout in forward keeps dropping in eval mode.

Source: "Behavior of F.dropout in eval mode" — https://github.com/pytorch/pytorch/issues/26338

The bug: `x = F.dropout(x)` in `forward`. The functional form defaults to
`training=True` and does not see `model.eval()`, so validation and inference still drop
half the activations: two eval passes of the same batch differ, and every evaluation
metric is noisy and biased.
The fix (the maintainers' answer): pass `training=self.training` (or use the `nn.Dropout`
module, which follows train/eval).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from _common import accuracy, learns, loader, seeded, teacher_classification

EXPECTED = [("dropout-in-eval", None)]


class Net(nn.Module):
    def __init__(self, follow_mode: bool):
        super().__init__()
        self.follow_mode = follow_mode
        self.fc1 = nn.Linear(20, 64)
        self.fc2 = nn.Linear(64, 4)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.dropout(x, p=0.5, training=self.training) if self.follow_mode else F.dropout(x, p=0.5)
        return self.fc2(x)


def _build(follow_mode: bool) -> dict:
    seeded()
    x, y = teacher_classification(512, 20, 4, seed=5)
    model = Net(follow_mode)
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.CrossEntropyLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def buggy() -> dict:
    return _build(follow_mode=False)


def fixed() -> dict:
    return _build(follow_mode=True)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 30, lambda: accuracy(s["model"], s["train_loader"]), 0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
