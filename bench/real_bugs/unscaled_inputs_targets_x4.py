"""Fitting y = x**4 on x in [-100, 100] with sigmoid layers: it works for x**3, not x**4.

Source: "Why do I fail to predict y=x**4 with keras? (y=x**3 works)" —
http://stackoverflow.com.mevn.net/questions/52800582/why-do-i-fail-to-predict-y-x4-with-keras-y-x3-works

The bug (Keras, ported): Dense sigmoid/ELU layers with glorot_uniform init, trained on
raw x in [-100, 100] and raw targets up to 1e8. The answer: the first layer's
pre-activations are ~10, so the sigmoids saturate and pass almost no gradient, and the
output layer would need weights ~1e8 to reach the targets.
The fix (the answer): scale the inputs and the outputs (x / 100 and y / 1e8), then
invert the scaling on the predictions.
"""

import torch
import torch.nn as nn
from _common import learns, loader, r2, seeded

EXPECTED = [("unscaled-targets", None), ("unnormalized-input", None)]


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(1, 10), nn.Sigmoid(), nn.Linear(10, 10), nn.ELU(), nn.Linear(10, 1))
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


def _build(scaled: bool) -> dict:
    seeded()
    x = torch.linspace(-100, 100, 401)[:, None]
    y = x ** 4
    if scaled:
        x, y = x / 100, y / 1e8
    model = _model()
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.MSELoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2)}


def buggy() -> dict:
    return _build(scaled=False)


def fixed() -> dict:
    return _build(scaled=True)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 60, lambda: r2(s["model"], s["train_loader"]), 0.9, "r2")


if __name__ == "__main__":
    print(verify_fixed())
