"""Broken: lr-too-low. A healthy MLP 20 -> 64 -> 64 -> 4 whose LR is scaled with the batch
size (the linear scaling rule, lr = 0.1 x batch / 256) in integer arithmetic.

`BATCH // 256` is 0 for any batch under 256, so the optimizer's LR is exactly 0: every
step leaves the weights as they were and the loss never moves (issue 15's report: lr-find
crashed on it in its verdict with a ZeroDivisionError). Expected: `lr-too-low`, with the 0
in its message; `cannot-overfit` follows from it.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification

BATCH = 64
LR = 0.1 * (BATCH // 256)  # the bug: integer division, so 0.0 (0.1 * BATCH / 256 is 0.025)


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (20,), 4, seed=5)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=BATCH),
        "optimizer": torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9),
    }
