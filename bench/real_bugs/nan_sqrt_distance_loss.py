"""A GPS distance loss sqrt(dx² + dy²) whose gradient is NaN when a prediction is exact.

Source: "loss突然变为nan?你可能踩了sqrt()的坑" — http://ddrv.cn/?p=758668

The bug: a custom loss `mean(sqrt(square(lx) + square(ly)))` of the position errors.
The forward pass is fine, but d sqrt(u)/du = 1/(2 sqrt(u)) is infinite at u = 0, so as
soon as one error is exactly 0 the backward pass gives NaN and the loss turns NaN (the
poster tried lower LRs, smaller batches, clipping and BatchNorm first).
The fix (the post's): add a tiny constant inside the square root,
`sqrt(square(lx) + square(ly) + 1e-10)`.
"""

import torch
import torch.nn as nn

from _common import learns, loader, r2, seeded

EXPECTED = [("non-finite", None)]


class DistanceLoss(nn.Module):
    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, pred, target):
        lx, ly = (pred - target).unbind(dim=1)
        return torch.sqrt(lx.square() + ly.square() + self.eps).mean()


def _data():
    """Positions on a grid of (0.1-degree) cells: some are predicted exactly by a ReLU
    network that outputs 0 for them, as a regressor of clipped coordinates does."""
    g = torch.Generator().manual_seed(24)
    x = torch.randn(512, 8, generator=g)
    pos = torch.relu(x[:, :2] @ torch.randn(2, 2, generator=g))
    return x, pos


def _build(eps: float) -> dict:
    seeded()
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2), nn.ReLU())
    return {"model": model, "train_loader": loader(*_data(), batch_size=32),
            "criterion": DistanceLoss(eps), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def buggy() -> dict:
    return _build(eps=0.0)


def fixed() -> dict:
    return _build(eps=1e-10)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 30, lambda: r2(s["model"], s["train_loader"]), 0.8, "r2")


if __name__ == "__main__":
    print(verify_fixed())
