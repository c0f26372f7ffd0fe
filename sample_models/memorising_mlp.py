"""Broken: overfitting. A wide MLP 32 -> 512 -> 512 -> 4 trained on only 128 samples,
~30% of whose labels are noise (relabelled at random).

The model has ~280k parameters for 128 samples: it memorises them, noisy labels
included. Its training loss keeps falling (1.42 -> 0.11 in 5 epochs) while the
validation loss (256 clean samples) bottoms out at epoch 3 (1.04) and then climbs
(1.35 at epoch 5) as the model grows confident on the memorised noise.
Expected: `overfitting` (fit), from epoch 4.
"""

import torch
import torch.nn as nn

from _data import loader, split, teacher_classification

N_TRAIN = 128  # the bug: far too few samples for the model ...
NOISE = 0.3  # ... and ~30% of their labels wrong


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(N_TRAIN + 256, (32,), 4, seed=7)
    (xt, yt), (xv, yv) = split(x, y, 256)
    g = torch.Generator().manual_seed(7)
    noisy = torch.rand(N_TRAIN, generator=g) < NOISE
    yt = torch.where(noisy, torch.randint(0, 4, (N_TRAIN,), generator=g), yt)
    model = nn.Sequential(nn.Linear(32, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 4))
    return {
        "model": model,
        "train_loader": loader(xt, yt, batch_size=8),
        "val_loader": loader(xv, yv, batch_size=128, shuffle=False),
        "optimizer": torch.optim.Adam(model.parameters(), lr=2e-3),
    }
