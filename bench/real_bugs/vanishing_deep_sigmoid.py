"""A 15-layer sigmoid MLP whose first layers receive gradients below 1e-8.

Source: "Vanishing Gradients — Sigmoid Freezes Neural Networks" —
https://thecodeforge.io/ml-ai/what-is-neural-network/

The bug: a deep fully connected network with sigmoid activations in every hidden layer:
each layer multiplies the backpropagated gradient by sigmoid' <= 0.25, so the first
layers' gradient norms fall below 1e-8 and they freeze; the network stalls.
The fix (the article's): ReLU activations in the hidden layers (with He init).
"""

import torch
import torch.nn as nn
from _common import accuracy, learns, loader, seeded, teacher_classification

EXPECTED = [("vanishing-gradient", "network.0")]

DEPTH, WIDTH = 15, 32


def _build(activation) -> dict:
    seeded()
    layers, width_in = [], 16
    for _ in range(DEPTH - 1):
        layers += [nn.Linear(width_in, WIDTH), activation()]
        width_in = WIDTH
    layers.append(nn.Linear(WIDTH, 4))
    model = nn.Sequential()
    model.add_module("network", nn.Sequential(*layers))
    if activation is nn.ReLU:
        for layer in model.network:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
    x, y = teacher_classification(512, 16, 4, seed=22)
    return {"model": model, "train_loader": loader(x, y, batch_size=32),
            "criterion": nn.CrossEntropyLoss(), "optimizer": torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)}


def buggy() -> dict:
    return _build(nn.Sigmoid)


def fixed() -> dict:
    return _build(nn.ReLU)


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 20, lambda: accuracy(s["model"], s["train_loader"]), 0.9, "accuracy")


if __name__ == "__main__":
    print(verify_fixed())
