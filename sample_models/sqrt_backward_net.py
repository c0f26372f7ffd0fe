"""Broken: a siamese net whose Euclidean distance is `torch.sqrt(sum((a - b)²))` (module `distance`).

Some pairs are the same sample twice (a == b): the forward pass is finite
(sqrt(0) = 0), but sqrt's derivative at 0 is infinite, so the backward pass
turns the encoder's gradients into NaN. Expected: `non-finite` found in backward,
where = `distance`, op `sqrt`. Fix: `torch.sqrt(d2 + eps)` (or `d2.clamp_min(eps)`).
"""

import torch
import torch.nn as nn

from _data import loader


class PairDistance(nn.Module):
    """Euclidean distance between the two embeddings of each pair."""

    def forward(self, a, b):
        return torch.sqrt(((a - b) ** 2).sum(dim=1, keepdim=True))  # bug: d/dx sqrt(x) = inf at 0


class SiameseNet(nn.Module):
    def __init__(self, features=16, embed=8):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(features, 32), nn.Tanh(), nn.Linear(32, embed))
        self.distance = PairDistance()
        self.head = nn.Linear(1, 1)  # distance -> "different pair" logit

    def forward(self, pairs):
        a, b = self.encoder(pairs[:, 0]), self.encoder(pairs[:, 1])
        return self.head(self.distance(a, b))


def build():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(6)
    first = torch.randn(256, 16, generator=g)
    same = torch.rand(256, generator=g) < 0.25  # a quarter of the pairs repeat their first sample
    second = torch.where(same[:, None], first, torch.randn(256, 16, generator=g))
    pairs = torch.stack([first, second], dim=1)
    different = (~same).float().unsqueeze(1)
    model = SiameseNet()
    return {
        "model": model,
        "train_loader": loader(pairs, different, batch_size=32),
        "criterion": nn.BCEWithLogitsLoss(),
    }
