"""Broken: from step 150 a corrupt data shard (labels shifted by one class) comes in for 8
batches: the loss, long converged, jumps back far above where training started."""

import torch
import torch.nn as nn

from _data import batches, blobs

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
criterion = nn.CrossEntropyLoss()
x, y = blobs()
for step, (xb, yb) in zip(range(300), batches(x, y)):
    if 150 <= step < 158:
        yb = (yb + 1) % 4  # the corrupt shard
    optimizer.zero_grad()
    loss = criterion(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
