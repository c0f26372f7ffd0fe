"""Broken: an MLP ending in nn.Softmax, trained with nn.CrossEntropyLoss.

Bug: CrossEntropyLoss applies log-softmax itself, so the softmax runs twice:
the loss only sees probabilities in [0, 1], its gradients flatten and the model
learns slowly, if at all. Expected: `output-activation-mismatch` from the `init`
check, `where` = the softmax module, `network.5`.
"""

import torch
import torch.nn as nn

from _data import loader, teacher_classification


class Classifier(nn.Module):
    def __init__(self, features=20, classes=5):
        super().__init__()
        self.network = nn.Sequential(
            nn.Linear(features, 64), nn.ReLU(),
            nn.Linear(64, 64), nn.ReLU(),
            nn.Linear(64, classes),
            nn.Softmax(dim=1),  # the bug: CrossEntropyLoss wants the raw logits
        )

    def forward(self, x):
        return self.network(x)


def build():
    torch.manual_seed(0)
    x, y = teacher_classification(512, (20,), 5, seed=7)
    model = Classifier()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "criterion": nn.CrossEntropyLoss(),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
