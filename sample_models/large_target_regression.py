"""An MSE regression whose targets lie near 100 (100 + 30 x a linear signal): it trains.

The residuals start near 100, so the loss starts near 1e4 and the total gradient norm
near 1e3: large numbers, and the right ones for this loss (issue 13 item 3: an absolute
`exploding-gradient` threshold of 1e3 fired on such a model). Expected: only
`unscaled-targets`, a warning (standardising the targets is still the better set-up).
"""

import torch
import torch.nn as nn

from _data import loader, split

TARGET_MEAN, TARGET_SCALE = 100.0, 30.0


def build():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2304, 16, generator=g)
    w = torch.randn(16, 1, generator=g) / 4
    y = TARGET_MEAN + TARGET_SCALE * (x @ w) + torch.randn(2304, 1, generator=g)
    (xt, yt), (xv, yv) = split(x, y, 256)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    return {
        "model": model,
        "train_loader": loader(xt, yt, batch_size=32),
        "val_loader": loader(xv, yv, batch_size=256, shuffle=False),
        "criterion": nn.MSELoss(),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2),
    }
