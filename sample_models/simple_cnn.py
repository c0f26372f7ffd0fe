"""Healthy: SimpleCNN, three conv blocks with BatchNorm on 3x32x32 images."""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


def conv_block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(), nn.MaxPool2d(2))


class SimpleCNN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(conv_block(3, 16), conv_block(16, 32), conv_block(32, 64))
        self.classifier = nn.Linear(64 * 4 * 4, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (3, 32, 32), 10, seed=1)
    model = SimpleCNN()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        "example_input": [1, 3, 32, 32],
    }
