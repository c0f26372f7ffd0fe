"""The TensorFlow basic-classification MLP on raw 0-255 pixels: 10% accuracy instead of 85%.

Source: "Why normalize when all features are on the same scale?" —
https://datascience.stackexchange.com/questions/39929/why-normalize-when-all-features-are-on-the-same-scale

The bug (Keras, ported): Flatten(28x28) -> Dense(128, relu) -> Dense(10, softmax) on
Fashion-MNIST-like images left as integers 0 ... 255. With normalisation the poster gets
over 85% accuracy, without it 10%. The answers: the initial weights, the LR and the
activations all assume inputs of unit scale; raw pixels make the first layer's outputs
hundreds of times too large.
The fix (the tutorial's step the poster skipped): divide the pixels by 255.
"""

import torch
import torch.nn as nn
from _common import accuracy, blob_images, learns, loader, seeded

EXPECTED = [("unnormalized-input", None)]


def _build(normalise: bool) -> dict:
    seeded()
    x, y = blob_images(512, 1, 14, 10, seed=19)
    pixels = (x * 255).round()
    model = nn.Sequential(nn.Flatten(), nn.Linear(14 * 14, 128), nn.ReLU(), nn.Linear(128, 10))
    return {"model": model, "train_loader": loader(pixels / 255 if normalise else pixels, y, batch_size=32),
            "criterion": nn.CrossEntropyLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def buggy() -> dict:
    return _build(normalise=False)


def fixed() -> dict:
    return _build(normalise=True)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 10, lambda: accuracy(s["model"], s["train_loader"]), 0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
