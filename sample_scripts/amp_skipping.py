"""Broken: float16 autocast with a GradScaler; from step 100 the data pipeline stops
normalising one feature (raw values ~1e4), the first layer's float16 output overflows to
inf and the GradScaler skips nearly every step from then on."""

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
    if step >= 100:
        xb = xb.clone()
        xb[:, 0] = xb[:, 0] * 1e4 + 3e4  # the raw, unnormalised feature
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = criterion(model(xb), yb)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
print(f"final loss {loss.item():.4f}, scale {scaler.get_scale():g}")
