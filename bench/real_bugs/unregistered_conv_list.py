"""A text CNN's Conv1d filters defined in a list: not registered, left on the CPU by .cuda().

Source: "submodules defined in list are not auto-registered as parameters" —
https://github.com/pytorch/pytorch/issues/1053

The bug: `self.conv1d = [nn.Conv1d(WORD_VEC_SIZE, 1, 3), nn.Conv1d(..., 4), nn.Conv1d(..., 5)]`.
After `a.cuda()` the convolutions are still on the CPU, and they are not in
`parameters()`: the optimizer never trains the filters.
The fix (the maintainer's answer): `nn.ModuleList`.
"""

import torch
import torch.nn as nn
from _common import accuracy, generator, learns, loader, seeded

EXPECTED = [("unregistered-module", "conv1d")]

WORD_VEC_SIZE, SEQ = 12, 20


class Net(nn.Module):
    def __init__(self, register: bool):
        super().__init__()
        convs = [nn.Conv1d(WORD_VEC_SIZE, 4, k) for k in (3, 4, 5)]
        self.conv1d = nn.ModuleList(convs) if register else convs
        self.fc = nn.Linear(12, 2)

    def forward(self, x):  # x: (B, WORD_VEC_SIZE, SEQ)
        pooled = [torch.relu(conv(x)).amax(dim=2) for conv in self.conv1d]
        return self.fc(torch.cat(pooled, dim=1))


def _data():
    """Label 1 when a fixed 3-word pattern occurs somewhere in the sequence."""
    g = generator(11)
    n = 512
    x = torch.randn(n, WORD_VEC_SIZE, SEQ, generator=g)
    pattern = torch.randn(WORD_VEC_SIZE, 3, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    where = torch.randint(0, SEQ - 3, (n,), generator=g)
    for i in range(n):
        if y[i]:
            x[i, :, where[i]:where[i] + 3] = 2 * pattern
    return x, y


def _build(register: bool) -> dict:
    seeded()
    model = Net(register)
    return {"model": model, "train_loader": loader(*_data(), batch_size=32),
            "criterion": nn.CrossEntropyLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=3e-3)}


def buggy() -> dict:
    return _build(register=False)


def fixed() -> dict:
    return _build(register=True)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 10, lambda: accuracy(s["model"], s["train_loader"]), 0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
