"""Healthy: a small ResNet of residual bottleneck blocks (1x1 -> 3x3 -> 1x1, BatchNorm)."""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class Bottleneck(nn.Module):
    def __init__(self, channels, width):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(width, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.expand(self.conv(self.reduce(x))))


class BottleneckNet(nn.Module):
    def __init__(self, classes=10, channels=64, blocks=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(), nn.MaxPool2d(2))
        self.blocks = nn.Sequential(*[Bottleneck(channels, channels // 4) for _ in range(blocks)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(256, (3, 16, 16), 10, seed=3)
    model = BottleneckNet()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
