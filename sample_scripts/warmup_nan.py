"""Broken: a linear LR warm-up towards an LR of 2.0, far past this regression's stable LR
(~0.9): once the LR crosses it (around step 140) the loss grows geometrically, and by
step ~155 it overflows to inf/NaN."""

import torch
import torch.nn as nn

from _data import batches

torch.manual_seed(0)
g = torch.Generator().manual_seed(0)
x = torch.randn(4096, 20, generator=g)
y = x @ (torch.randn(20, 1, generator=g) / 20 ** 0.5) + 0.1 * torch.randn(4096, 1, generator=g)
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 1))
target_lr, warmup = 2.0, 300
optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
criterion = nn.MSELoss()
for step, (xb, yb) in zip(range(300), batches(x, y)):
    for group in optimizer.param_groups:
        group["lr"] = target_lr * min(1.0, (step + 1) / warmup)
    optimizer.zero_grad()
    loss = criterion(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
