"""Broken: a 10-layer MLP with sigmoid activations and PyTorch's default init. Each sigmoid
scales the gradient by at most 0.25 on the way back, so the first layers get gradients
thousands of times smaller than the last hidden one: they barely train, and the loss
creeps down only through the last layers."""

import torch
import torch.nn as nn

from _data import batches, blobs

torch.manual_seed(0)
layers = [nn.Linear(20, 64), nn.Sigmoid()]
for _ in range(8):
    layers += [nn.Linear(64, 64), nn.Sigmoid()]
model = nn.Sequential(*layers, nn.Linear(64, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
criterion = nn.CrossEntropyLoss()
x, y = blobs()
for _step, (xb, yb) in zip(range(300), batches(x, y)):
    optimizer.zero_grad()
    loss = criterion(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
