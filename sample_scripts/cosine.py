"""Healthy: SGD with a cosine schedule stepped per batch, reaching LR 0 exactly at its planned end."""

import torch
import torch.nn as nn

from _data import batches, blobs

torch.manual_seed(0)
steps = 400
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
criterion = nn.CrossEntropyLoss()
x, y = blobs()
for _step, (xb, yb) in zip(range(steps), batches(x, y)):
    optimizer.zero_grad()
    loss = criterion(model(xb), yb)
    loss.backward()
    optimizer.step()
    scheduler.step()
print(f"final loss {loss.item():.4f}, lr {scheduler.get_last_lr()[0]:.3g}")
