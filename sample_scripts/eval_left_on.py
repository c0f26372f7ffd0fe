"""Broken: validation at step 100 calls model.eval() and never model.train() again, so the
rest of training runs without dropout and with frozen BatchNorm statistics."""

import torch
import torch.nn as nn

from _data import batches, blobs

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
criterion = nn.CrossEntropyLoss()
x, y = blobs()
x_val, y_val = blobs(512, seed=1)
for step, (xb, yb) in zip(range(300), batches(x, y)):
    optimizer.zero_grad()
    loss = criterion(model(xb), yb)
    loss.backward()
    optimizer.step()
    if step == 100:
        model.eval()  # the bug: no model.train() after the validation pass
        with torch.no_grad():
            val_loss = criterion(model(x_val), y_val)
        print(f"step {step}: val loss {val_loss.item():.4f}")
