"""Broken: a CNN whose pooling head reorders (N, C, H, W) with `view` instead of `permute`.

Bug: `ChannelStats` wants per-channel rows (C, N, H*W) and writes
`h.view(c, n, -1)`; `view` only reinterprets the memory, so each "channel row"
is filled with values from several samples. Every sample's prediction then
depends on the other samples in its batch (and on the batch size). Expected:
`batch-dependency` from the `init` check, `where` = `pool`.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class ChannelStats(nn.Module):
    """Per-channel mean and max over the spatial positions: (N, C, H, W) -> (N, 2C)."""

    def forward(self, h):
        n, c = h.shape[:2]
        per_channel = h.view(c, n, -1)  # the bug: h.permute(1, 0, 2, 3).reshape(c, n, -1)
        stats = torch.cat([per_channel.mean(2), per_channel.amax(2)], 0)  # (2C, N)
        return stats.t()


class MixingCNN(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.pool = ChannelStats()
        self.classifier = nn.Linear(2 * 32, classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (3, 16, 16), 10, seed=10)
    model = MixingCNN()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
