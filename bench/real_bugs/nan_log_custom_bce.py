"""A hand-written BCE, -t·log(p) - (1-t)·log(1-p), that turns inf/NaN on confident outputs.

Source: "自定义pytorch损失函数使得训练过程中出现nan" — https://e-com-net.com/article/1609698298044645376.htm

The bug: a weighted BCE written as
`loss = - target * torch.log(pred) - (1-target) * torch.log(1-pred)`. When the sigmoid
saturates, `pred` is exactly 0 or 1 in float32, log gives -inf, and the loss and the
gradients become inf/NaN. (PyTorch's own BCELoss clamps its log at -100 for this reason.)
The fix (the post's): clamp the prediction first,
`pred = torch.clamp(pred, min=1e-7, max=1-1e-7)`.
"""

import torch
import torch.nn as nn

from _common import accuracy, learns, loader, seeded, teacher_classification

EXPECTED = [("non-finite", None)]


class WeightedBCE(nn.Module):
    def __init__(self, clamp: bool, pos_weight: float = 2.0):
        super().__init__()
        self.clamp, self.pos_weight = clamp, pos_weight

    def forward(self, pred, target):
        if self.clamp:
            pred = torch.clamp(pred, min=1e-7, max=1 - 1e-7)
        loss = -self.pos_weight * target * torch.log(pred) - (1 - target) * torch.log(1 - pred)
        return loss.mean()


def _build(clamp: bool) -> dict:
    seeded()
    x, y = teacher_classification(512, 20, 2, seed=25, scale=3.0)
    # a wide-open first layer (std-3 inputs, std-1 weights) saturates the output sigmoid
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
    nn.init.normal_(model[0].weight, std=1.0)
    return {"model": model, "train_loader": loader(x / 3, y.float()[:, None], batch_size=32),
            "criterion": WeightedBCE(clamp), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2)}


def buggy() -> dict:
    return _build(clamp=False)


def fixed() -> dict:
    return _build(clamp=True)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 20, lambda: accuracy(s["model"], s["train_loader"], lambda o: (o > 0.5).float()),
                  0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
