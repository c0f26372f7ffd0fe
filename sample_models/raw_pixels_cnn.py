"""Broken: the CNN is fed raw 0-255 pixel values (floats in uint8 range), never normalised.

Bug: the images go to the model as `x.float()` of 0-255 bytes, without
`/ 255` or `transforms.Normalize(mean, std)`. BatchNorm after the first conv
hides it in the forward pass, but the first conv's gradients (and Adam's
effective step relative to its weights) are ~100x off scale. Expected:
`unnormalized-input` from the `data` check (`where` = null: it is the data).
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


def conv_block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(), nn.MaxPool2d(2))


class SmallCNN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(conv_block(3, 16), conv_block(16, 32))
        self.classifier = nn.Linear(32 * 4 * 4, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (3, 16, 16), 10, seed=5)
    pixels = (x * 50 + 128).round().clamp(0, 255)  # the bug: 0-255 values go straight to the model
    model = SmallCNN()
    return {
        "model": model,
        "train_loader": loader(pixels, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
