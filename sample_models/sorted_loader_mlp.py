"""Broken: class-sorted data loaded without shuffling.

Bug: the samples are sorted by label and the DataLoader has shuffle=False, so each batch
holds one class: every step pulls the model towards that class. Expected:
`unshuffled-data` (a warning) from the `static` check, `where` = the loader.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (20,), 4, seed=19)
    order = torch.argsort(y, stable=True)  # e.g. an ImageFolder-style listing, class by class
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    return {
        "model": model,
        "train_loader": loader(x[order], y[order], batch_size=32, shuffle=False),  # the bug
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
