"""Hidden layers kept in a plain Python list: not in parameters(), never trained.

Source: "Module: parameters are not included if the module is initialized in a list" —
https://github.com/pytorch/pytorch/issues/715

The bug: an SNLI classifier builds its hidden layers as `self.hids = []` plus
`self.hids.append([nn.Linear(n_hid, n_hid), nn.ReLU()])` in a loop; `parameters()` lists
only the classifier, so the optimizer never updates the hidden layers (and `.cuda()`
would not move them).
The fix (the maintainer's answer): wrap the layers in `nn.ModuleList` (here an
`nn.ModuleList` of `nn.Sequential` blocks).
"""

import torch
import torch.nn as nn
from _common import accuracy, learns, loader, seeded, teacher_classification

EXPECTED = [("unregistered-module", "hids")]

N_HID, N_LAYERS = 32, 3


class SNLINet(nn.Module):
    def __init__(self, register: bool):
        super().__init__()
        self.embed = nn.Linear(24, N_HID)
        blocks = [nn.Sequential(nn.Linear(N_HID, N_HID), nn.ReLU()) for _ in range(N_LAYERS)]
        self.hids = nn.ModuleList(blocks) if register else blocks
        self.classifier = nn.Linear(N_HID, 3)

    def forward(self, x):
        x = torch.relu(self.embed(x))
        for block in self.hids:
            x = block(x)
        return self.classifier(x)


def _build(register: bool) -> dict:
    seeded()
    x, y = teacher_classification(512, 24, 3, seed=9)
    model = SNLINet(register)
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.CrossEntropyLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def buggy() -> dict:
    return _build(register=False)


def fixed() -> dict:
    return _build(register=True)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 15, lambda: accuracy(s["model"], s["train_loader"]), 0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
