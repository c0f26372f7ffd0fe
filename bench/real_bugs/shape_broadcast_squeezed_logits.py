"""A regression head whose squeezed output (B,) meets labels of shape (B, 1) in MSELoss.

Source: "Using a target size ... that is different to the input size" —
https://github.com/deepset-ai/FARM/issues/229

The bug: FARM's RegressionHead squeezed its logits to (32,) while the labels stayed
(32, 1). MSELoss only warns ("This will likely lead to incorrect results due to
broadcasting") and compares every prediction with every label of the batch: the model
learns to predict the batch mean, and the loss stalls (the user's train loss 218.8 on
labels 0-16).
The fix (the maintainer's PR #230): keep the logits and labels in the same shape (the
logits are no longer squeezed).
"""

import torch
import torch.nn as nn
from _common import learns, loader, r2, seeded, teacher_regression

EXPECTED = [("shape-broadcast", None)]


class Regressor(nn.Module):
    def __init__(self, squeeze: bool):
        super().__init__()
        self.squeeze = squeeze
        self.body = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, 1)

    def forward(self, x):
        logits = self.head(self.body(x))
        return logits.squeeze(-1) if self.squeeze else logits


def _build(squeeze: bool) -> dict:
    seeded()
    x, y = teacher_regression(512, 16, seed=7)
    model = Regressor(squeeze)
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.MSELoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def buggy() -> dict:
    return _build(squeeze=True)


def fixed() -> dict:
    return _build(squeeze=False)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 20, lambda: r2(s["model"], s["train_loader"]), 0.8, "r2")


if __name__ == "__main__":
    print(verify_fixed())
