"""Broken: float16 autocast with a GradScaler; after a 100-step warm-up the script starts
clipping gradients, but before scaler.unscale_: the gradients are still x65536, so every
step is clipped to a tiny fraction of max_norm."""

import torch
import torch.nn as nn

from _data import batches, blobs

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
scaler = torch.amp.GradScaler("cpu")
criterion = nn.CrossEntropyLoss()
x, y = blobs()
for step, (xb, yb) in zip(range(300), batches(x, y)):
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = criterion(model(xb), yb)
    scaler.scale(loss).backward()
    if step >= 100:  # clipping after the warm-up: the bug, no scaler.unscale_(optimizer) first
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    scaler.step(optimizer)
    scaler.update()
print(f"final loss {loss.item():.4f}")
