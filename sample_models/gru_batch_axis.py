"""Broken: a GRU sequence classifier without `batch_first=True`.

Bug: the batches are (batch, time, features), but `nn.GRU` defaults to (time, batch,
features), so it runs its recurrence along the batch: sample i's output depends on
samples 0..i-1 (and the 20 time steps are treated as 20 independent sequences). The
mix is causal, so sample 0 depends on no other sample; only later samples show it
(the classic forum report "my LSTM's accuracy depends on the batch size").
Expected: `batch-dependency` at `rnn`, found on the last sample's output.
"""

import torch
import torch.nn as nn

from _data import loader


class GRUClassifier(nn.Module):
    def __init__(self, features=8, hidden=32, classes=3):
        super().__init__()
        self.rnn = nn.GRU(features, hidden)  # the bug: batch_first=True is missing
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):  # x: (batch, time, features)
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def build():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(512, 20, 8, generator=g)
    y = (x[:, :, :3].sum(1).argmax(1))  # learnable from the sequence: the largest summed channel
    model = GRUClassifier()
    return {
        "model": model,
        "train_loader": loader(x, y, batch_size=32),
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
    }
