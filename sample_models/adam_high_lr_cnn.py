"""Broken: a small CNN (no BatchNorm) trained with Adam at lr=0.1.

Bug: Adam's first steps move every weight by about lr = 0.1, hundreds of times the
scale of a default-initialised 3x3 convolution (~0.1/√27 ≈ 0.02 per weight); after
a few steps the ReLUs after the convolutions never fire again, no gradient flows
back, and the loss sits at ~2.24 (the label prior's entropy, near ln 10 = 2.30). The units are alive at initialisation:
only a scan after the training steps sees them die (a classic Stack Overflow
report: "loss stuck at 2.302 with Adam lr=0.1").
Expected: `dead-neurons` on the weights the shared run ends with, at the ReLU that
died, with the step from which the convolution feeding it got no gradient.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class SmallCNN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (1, 28, 28), 10, seed=9)
    model = SmallCNN()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=64),
        "optimizer": torch.optim.Adam(model.parameters(), lr=0.1),  # the bug: 100x Adam's 1e-3
    }
