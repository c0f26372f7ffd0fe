"""Broken: a StepLR meant per epoch (decay x0.1 every 20 epochs) stepped once per batch:
by step 100 the LR is 1e-5 of its start, and the rest of the run learns nothing."""

import torch
import torch.nn as nn

from _data import batches, blobs

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.1)
criterion = nn.CrossEntropyLoss()
x, y = blobs()
for _step, (xb, yb) in zip(range(400), batches(x, y)):
    optimizer.zero_grad()
    loss = criterion(model(xb), yb)
    loss.backward()
    optimizer.step()
    scheduler.step()  # the bug: per batch, while step_size counts epochs
print(f"final loss {loss.item():.4f}, lr {scheduler.get_last_lr()[0]:.3g}")
