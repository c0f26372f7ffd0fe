"""A (batch, seq, feature) tensor fed to an LSTM built without batch_first=True.

Source: "LSTM change batch_first=True,loss does not decrease" —
https://discuss.pytorch.org/t/lstm-change-batch-first-true-loss-does-not-decrease/62364

The bug: the CRNN's LSTM and the tensor fed to it disagree on which axis is the batch:
changing `batch_first` without permuting the input makes the LSTM run along the batch
axis, so each sample's output depends on the samples before it in the batch, and the
loss does not decrease. Ported the common way round: the loader gives (B, T, F) and
`nn.LSTM(...)` keeps its default `batch_first=False`.
The fix (the thread's answer): make the input layout and the LSTM agree
(`nn.LSTM(..., batch_first=True)` for (B, T, F) input).
"""

import torch
import torch.nn as nn
from _common import accuracy, generator, learns, loader, seeded

EXPECTED = [("batch-dependency", "lstm")]

T, F_IN = 12, 6


class Tagger(nn.Module):
    def __init__(self, batch_first: bool):
        super().__init__()
        self.lstm = nn.LSTM(F_IN, 32, batch_first=batch_first)
        self.fc = nn.Linear(32, 3)

    def forward(self, x):  # x: (B, T, F) from the loader
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])  # "the last time step", written for (B, T, H) outputs


def _data():
    """The class is which of three feature patterns dominates the sequence."""
    g = generator(21)
    n = 384
    y = torch.randint(0, 3, (n,), generator=g)
    protos = torch.randn(3, F_IN, generator=g)
    x = 0.8 * torch.randn(n, T, F_IN, generator=g) + protos[y][:, None] * 0.6
    return x, y


def _build(batch_first: bool) -> dict:
    seeded()
    model = Tagger(batch_first)
    return {"model": model, "train_loader": loader(*_data(), batch_size=32),
            "criterion": nn.CrossEntropyLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=3e-3)}


def buggy() -> dict:
    return _build(batch_first=False)


def fixed() -> dict:
    return _build(batch_first=True)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 15, lambda: accuracy(s["model"], s["train_loader"]), 0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
