"""Healthy: a small Transformer encoder classifier, AdamW with a linear warm-up."""

import torch
import torch.nn as nn

from _data import batches, sequences


class Net(nn.Module):
    def __init__(self, vocab=16, dim=32, length=12):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, length, dim))
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.head = nn.Linear(dim, 2)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens) + self.pos).mean(1))


torch.manual_seed(0)
model = Net()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 50))
criterion = nn.CrossEntropyLoss()
x, y = sequences()
for _step, (xb, yb) in zip(range(300), batches(x, y)):
    optimizer.zero_grad()
    loss = criterion(model(xb), yb)
    loss.backward()
    optimizer.step()
    scheduler.step()
print(f"final loss {loss.item():.4f}")
