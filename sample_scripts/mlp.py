"""Healthy: an MLP trained with Adam on Gaussian blobs."""

import torch
import torch.nn as nn

from _data import batches, blobs

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
criterion = nn.CrossEntropyLoss()
x, y = blobs()
for _step, (xb, yb) in zip(range(300), batches(x, y)):
    optimizer.zero_grad()
    loss = criterion(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
