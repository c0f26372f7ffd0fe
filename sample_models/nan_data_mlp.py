"""Broken: a tabular dataset with missing values left as NaN.

Bug: 7 feature values are NaN (missing measurements never imputed); each batch
that holds one turns the loss, and after one update every weight, into NaN.
Expected: `data-non-finite` from the `data` check, with the count (7 NaN in the
inputs, over the 8 scanned batches that cover the whole data set) and the batches
that hold them.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification

MISSING = [(3, 0), (40, 5), (41, 5), (200, 11), (301, 2), (302, 7), (499, 15)]  # (row, feature)


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (16,), 4, seed=6)
    for row, feature in MISSING:
        x[row, feature] = float("nan")  # the bug: missing values not imputed
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=64),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
