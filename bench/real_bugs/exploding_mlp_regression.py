"""An MLP regression with SGD and momentum whose loss explodes to NaN in the first epoch.

Source: "How to Avoid Exploding Gradients With Gradient Clipping" —
https://machinelearningmastery.com/how-to-avoid-exploding-gradients-in-neural-networks-with-gradient-clipping/

The bug (Keras, ported): a 25-unit ReLU MLP on a 20-feature regression problem with raw
targets (`make_regression`, targets spread over hundreds), SGD lr=0.01, momentum=0.9,
MSE. The large errors give large gradients, the weights overshoot and the loss is NaN
after the first steps.
The fix (the tutorial's): gradient norm scaling, `clipnorm=1.0` on the optimizer — here an
SGD that rescales the gradient to norm 1 before each step, as Keras's clipnorm does.

The fixed program keeps the targets as they are (std 250, range -663 ... 695), and nndoctor
warns `unscaled-targets` on it. That warning is true, not a false alarm: the tutorial's own
first line names "the scale of the target variable" as a cause of the instability, issue 14
asks for exactly this warning on targets up to 125, and `verify_true_on_fixed()` shows that
standardising the targets alone, with the buggy program's plain SGD (lr 0.01, momentum 0.9)
and no clipping, trains (R² 0.9996 after 100 epochs, MSE 1.19 -> 5e-4 in target-std units):
clipping hides the symptom, the scale is still the cause. So the case declares it in
TRUE_ON_FIXED (the benchmark lists it apart, it does not drop it); the fixed program stays the
tutorial's fix rather than a better one we would have to invent.
"""

import torch
import torch.nn as nn
from _common import generator, learns, loader, r2, seeded

EXPECTED = [("exploding-gradient", None), ("non-finite", None)]
TRUE_ON_FIXED = {"unscaled-targets": "clipping keeps the targets at std 250; standardising them alone, "
                                     "without clipping, trains the buggy program's SGD (verify_true_on_fixed)"}


def _data():
    """sklearn's make_regression(n_samples=1000, n_features=20, noise=0.1), reimplemented."""
    g = generator(23)
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


def verify_true_on_fixed() -> dict:
    """unscaled-targets is true: the buggy program (no clipping) with standardised targets learns."""
    s = buggy()
    x, y = _data()
    s["train_loader"] = loader(x, (y - y.mean()) / y.std(), batch_size=32)
    return learns(s, 100, lambda: r2(s["model"], s["train_loader"]), 0.95, "r2")


if __name__ == "__main__":
    print(verify_fixed())
    print(verify_true_on_fixed())
