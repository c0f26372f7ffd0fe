"""Broken: lr-too-high. A healthy MLP 20 -> 64 -> 64 -> 4 trained with Adam at lr=1.0.

Adam's step is about `lr` per weight whatever the gradient's scale, so lr=1.0 moves
every weight by ~1 per step: the loss jumps up in the first steps and training never
settles. The LR range test's loss bottoms out near 0.01-0.1 and rises beyond it.
Expected: `lr-too-high` (lr-find's race: trained from the same state on the same
batches, the user's LR diverges or makes far less progress than the winner's).
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification

LR = 1.0  # the bug: ~1000x Adam's usual 1e-3


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (20,), 4, seed=5)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=LR),
    }
