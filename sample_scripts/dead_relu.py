"""Broken: a schedule's "warm restart" sets the LR to 4.0 (80x the base 0.05) for five steps
at step 120. The loss recovers within a few dozen steps, but the jump pushed most of the
second ReLU layer's units below zero for every input: from then on they never fire and,
passing no gradient, never come back (196 of its 256 units)."""

import torch
import torch.nn as nn

from _data import batches, blobs

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
criterion = nn.CrossEntropyLoss()
x, y = blobs()
for step, (xb, yb) in zip(range(600), batches(x, y, batch_size=256)):
    for group in optimizer.param_groups:
        group["lr"] = 4.0 if 120 <= step < 125 else 0.05  # the bug: a restart 80x the base LR
    optimizer.zero_grad()
    loss = criterion(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
