"""Broken: hidden layers kept in a plain Python list instead of an nn.ModuleList.

Bug: the list's layers are used in forward but are not submodules: they are missing from
model.parameters() (so from the optimizer), state_dict() and .to(). Expected:
`unregistered-module` from the `static` check at the attribute, `hidden`.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class MLP(nn.Module):
    def __init__(self, features=20, width=64, depth=2, classes=5):
        super().__init__()
        self.stem = nn.Linear(features, width)
        self.hidden = [nn.Linear(width, width) for _ in range(depth)]  # the bug: nn.ModuleList
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.head(x)


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (20,), 5, seed=18)
    model = MLP()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
