"""Healthy: a CNN with BatchNorm and dropout, validated every 100 steps with the correct
model.eval() ... model.train() toggle."""

import torch
import torch.nn as nn

from _data import batches, images

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
criterion = nn.CrossEntropyLoss()
x, y = images()
x_val, y_val = images(256, seed=1)
for step, (xb, yb) in zip(range(300), batches(x, y, batch_size=32)):
    optimizer.zero_grad()
    loss = criterion(model(xb), yb)
    loss.backward()
    optimizer.step()
    if step % 100 == 99:
        model.eval()
        with torch.no_grad():
            val_loss = criterion(model(x_val), y_val)
        model.train()
        print(f"step {step + 1}: val loss {val_loss.item():.4f}")
