"""Broken: class labels scaled like pixels, `labels // 255`: every label becomes 0.

Bug: a preprocessing step meant for the images applied to the integer labels. With one
target value, the model learns a constant and the loss falls to 0 without looking at the
inputs. Expected: `constant-targets` from the `static` check, `where` = the loader.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (20,), 5, seed=16)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))
    return {
        "model": model,
        "train_loader": loader(x, y // 255, batch_size=32),  # the bug: meant for the pixels
        "criterion": nn.CrossEntropyLoss(),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
