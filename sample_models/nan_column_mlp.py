"""Broken: a tabular data set where one feature was never recorded: the column is all NaN.

Bug: feature 5 is NaN in every row (a sensor left out of the export), so every hidden
unit of the first layer outputs NaN on every sample. `NaN > 0` is False: a scan that
counts "fired" as output > 0 reads the whole layer as dead and blames the init or the
LR; the NaN values are the data's.
Expected: `data-non-finite` for the inputs (the 512 NaN, in every scanned batch), the
nan check's `non-finite` at the first loss, and no `dead-neurons`.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (16,), 4, seed=7)
    x[:, 5] = float("nan")  # the bug: a column that was never recorded
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=64),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
