"""Broken: a binary classifier whose labels are -1/+1 (SVM style) fed to BCELoss.

Bug: BCELoss takes targets in [0, 1]; the data set codes its two classes as -1 and +1
(half the targets are -1). BCELoss raises on the first batch ("all elements of target
should be between 0 and 1"), so every check that computes the loss would fail with it.
Expected: `label-out-of-range` from the `data` check at the output `3` (the count of
targets below 0, the range -1 to 1), the checks that need the loss skipped naming it.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (16,), 2, seed=13)
    labels = (2.0 * y - 1.0).unsqueeze(1)  # the bug: -1/+1; BCELoss wants 0/1 (use y.float())
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
    return {
        "model": model,
        "train_loader": loader(x, labels, batch_size=64),
        "criterion": nn.BCELoss(),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
