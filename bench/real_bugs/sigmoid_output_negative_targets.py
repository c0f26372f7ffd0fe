"""A sigmoid output trained by MSE to fit a curve whose values are all negative.

Source: "Why is the neural network not learning the curve?" —
https://codewithsundeep.com/discussion/solution/58887284

The bug (Keras, ported): one Dense unit with a sigmoid activation, MSE loss, to learn
f(x) = -1/(exp(10x)+1) on [-1, 1]. The sigmoid outputs only values in (0, 1) and every
target is in (-1, 0): the function cannot be learned, the outputs sink towards 0.
The fix (the accepted answer): normalise the targets into the output's range [0, 1] —
learn 1/(exp(10x)+1), i.e. -f(x), and negate the prediction.
"""

import torch
import torch.nn as nn
from _common import learns, loader, r2, seeded

EXPECTED = [("output-range-mismatch", None)]


def _data(flip: bool):
    x = torch.linspace(-1, 1, 111)[:, None]
    y = -1.0 / (torch.exp(10.0 * x) + 1.0)
    return x, (-y if flip else y)


def _build(flip: bool) -> dict:
    seeded()
    model = nn.Sequential(nn.Linear(1, 1), nn.Sigmoid())
    return {"model": model, "train_loader": loader(*_data(flip), batch_size=16),
            "criterion": nn.MSELoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=0.05)}


def buggy() -> dict:
    return _build(flip=False)


def fixed() -> dict:
    return _build(flip=True)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 60, lambda: r2(s["model"], s["train_loader"]), 0.95, "r2")


if __name__ == "__main__":
    print(verify_fixed())
