"""Broken: underfitting. An MLP 20 -> 1 -> 10 whose hidden layer has a single unit.

Ten classes labelled by a linear teacher over 20 inputs need a ~10-dimensional
representation; squeezed through one unit, the model can only order the classes
along a line, and its training loss stays close to that of predicting the class
frequencies (ln 10 ≈ 2.3 for balanced classes) however long it trains.
Expected: `underfitting` (fit: best training loss > 80% of the trivial predictor's).
4,864 training samples in batches of 64: 5 epochs are 380 optimizer steps, enough for
fit to judge underfitting at all (fit.MIN_UNDERFIT_STEPS).
"""

import torch
import torch.nn as nn

from _data import loader, split, teacher_classification

BOTTLENECK = 1  # the bug: one unit between the inputs and ten classes


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(5120, (20,), 10, seed=6)
    (xt, yt), (xv, yv) = split(x, y, 256)
    model = nn.Sequential(nn.Linear(20, BOTTLENECK), nn.ReLU(), nn.Linear(BOTTLENECK, 10))
    return {
        "model": model,
        "train_loader": loader(xt, yt, batch_size=64),
        "val_loader": loader(xv, yv, batch_size=128, shuffle=False),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2),
    }
