"""Per-image standardisation (x - mean) / std without an epsilon: blank images become NaN.

Source: "Add epsilon to normalize computation to prevent zero division." —
https://github.com/vanvalenlab/deepcell-toolbox/pull/72

The bug: deepcell's `processing.normalize` standardises each image by its own mean and
standard deviation. An image with no signal (all pixels equal, std 0) is divided by 0 and
becomes all NaN, which propagates into the model's outputs and the loss.
The fix (the maintainers' PR): add a small epsilon, 1e-07 (Keras's `epsilon()`), to the
standard deviation.
"""

import torch
import torch.nn as nn
from _common import accuracy, blob_images, learns, loader, seeded

EXPECTED = [("data-non-finite", None)]


def _normalize(images: torch.Tensor, epsilon: float) -> torch.Tensor:
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    std = images.std(dim=(1, 2, 3), keepdim=True)
    return (images - mean) / (std + epsilon)


def _build(epsilon: float) -> dict:
    seeded()
    x, y = blob_images(512, 1, 12, 4, seed=26)
    x[::16] = 0.0  # empty fields of view: one image in 16 has no signal
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 4))
    return {"model": model, "train_loader": loader(_normalize(x, epsilon), y, batch_size=32),
            "criterion": nn.CrossEntropyLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def buggy() -> dict:
    return _build(epsilon=0.0)


def fixed() -> dict:
    return _build(epsilon=1e-7)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 10, lambda: accuracy(s["model"], s["train_loader"]), 0.85, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
