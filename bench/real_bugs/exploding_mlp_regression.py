"""An MLP regression with SGD and momentum whose loss explodes to NaN in the first epoch.

Source: "How to Avoid Exploding Gradients With Gradient Clipping" —
https://machinelearningmastery.com/how-to-avoid-exploding-gradients-in-neural-networks-with-gradient-clipping/

The bug (Keras, ported): a 25-unit ReLU MLP on a 20-feature regression problem with raw
targets (`make_regression`, targets spread over hundreds), SGD lr=0.01, momentum=0.9,
MSE. The large errors give large gradients, the weights overshoot and the loss is NaN
after the first steps.
The fix (the tutorial's): gradient norm scaling, `clipnorm=1.0` on the optimizer — here an
SGD that rescales the gradient to norm 1 before each step, as Keras's clipnorm does.
"""

import torch
import torch.nn as nn
from _common import learns, loader, r2, seeded

EXPECTED = [("exploding-gradient", None), ("non-finite", None)]


def _data():
    """sklearn's make_regression(n_samples=1000, n_features=20, noise=0.1), reimplemented."""
    g = torch.Generator().manual_seed(23)
    x = torch.randn(1000, 20, generator=g)
    coef = 100 * torch.rand(20, generator=g)
    y = x @ coef + 0.1 * torch.randn(1000, generator=g)
    return x, y[:, None]


class ClipNormSGD(torch.optim.SGD):
    """SGD with Keras's `clipnorm`: the whole gradient rescaled to at most `clipnorm`."""

    def __init__(self, params, clipnorm: float, **kwargs):
        super().__init__(params, **kwargs)
        self.clipnorm = clipnorm

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.clipnorm)
        return super().step(closure)


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(20, 25), nn.ReLU(), nn.Linear(25, 1))
    nn.init.kaiming_uniform_(model[0].weight, nonlinearity="relu")  # Keras's he_uniform
    return model


def buggy() -> dict:
    seeded()
    model = _model()
    return {"model": model, "train_loader": loader(*_data(), batch_size=32),
            "criterion": nn.MSELoss(), "optimizer": torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)}


def fixed() -> dict:
    seeded()
    model = _model()
    return {"model": model, "train_loader": loader(*_data(), batch_size=32),
            "criterion": nn.MSELoss(),
            "optimizer": ClipNormSGD(model.parameters(), clipnorm=1.0, lr=0.01, momentum=0.9)}


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 100, lambda: r2(s["model"], s["train_loader"]), 0.95, "r2")


if __name__ == "__main__":
    print(verify_fixed())
