"""Shared pieces of the real-bug ports: seeded synthetic data and a plain-PyTorch check
that a fixed program learns.

Imported by its siblings as `_common` (the runner and nndoctor put a case's folder on
sys.path, as for sample_models/_data.py). No nndoctor import here: `verify_fixed` must
judge a program with PyTorch alone.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

# The program seed: the case's weights, data and loader order. 0 (the default) builds the same
# programs on every run; `bench/real_bugs.py --program-seed run` sets it to each run's seed
# through this variable, so the seeds vary the programs too, not only nndoctor's own sampling.
PROGRAM_SEED_ENV = "NNDOCTOR_BENCH_PROGRAM_SEED"
SEED = int(os.environ.get(PROGRAM_SEED_ENV, "0") or 0)
DATA_SEED_STRIDE = 1000  # a case's data seed N becomes N + 1000 x SEED (N itself at SEED 0)


def generator(seed: int) -> torch.Generator:
    """A data generator for the case's own data seed `seed`, moved by the program seed."""
    return torch.Generator().manual_seed(seed + DATA_SEED_STRIDE * SEED)


def seeded(seed: int = SEED) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def loader(*tensors, batch_size: int = 32, shuffle: bool = True, seed: int = SEED) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle, generator=g)


def teacher_classification(n: int, shape, classes: int, seed: int = 0, scale: float = 1.0):
    """Inputs ~ N(0, scale²) of `shape`, labelled by a fixed random linear teacher: learnable."""
    g = generator(seed)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    x = torch.randn(n, *shape, generator=g) * scale
    w = torch.randn(x[0].numel(), classes, generator=g)
    y = (x.reshape(n, -1) @ w).argmax(dim=1)
    return x, y


def teacher_regression(n: int, dim: int, outputs: int = 1, seed: int = 0, noise: float = 0.05):
    """x ~ N(0, 1), y = a smooth nonlinear function of x with unit-scale spread (std ~ 1)."""
    g = generator(seed)
    x = torch.randn(n, dim, generator=g)
    w1 = torch.randn(dim, 16, generator=g) / dim ** 0.5
    w2 = torch.randn(16, outputs, generator=g) / 4
    y = torch.tanh(x @ w1) @ w2 * 2
    y = y + noise * torch.randn(n, outputs, generator=g)
    return x, (y - y.mean(0)) / y.std(0)


def blob_images(n: int, channels: int, size: int, classes: int, seed: int = 0):
    """Images in [0, 1] whose class is a bright square at a class-specific place, plus noise."""
    g = generator(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.2 * torch.rand(n, channels, size, size, generator=g)
    cells = int(classes ** 0.5 + 0.999)
    step = size // cells
    for i, c in enumerate(y.tolist()):
        r, k = divmod(c, cells)
        x[i, :, r * step:(r + 1) * step, k * step:(k + 1) * step] += 0.7
    return x.clamp(0, 1), y


# --------------------------------------------------------------------------- verification

def _loss(setup: dict, model: nn.Module, batch) -> torch.Tensor:
    if setup.get("loss_fn") is not None:
        return setup["loss_fn"](model, batch)
    inputs, targets = batch
    out = model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
    return setup["criterion"](out, targets)


def train(setup: dict, epochs: int) -> list:
    """The user's own loop: their model, loader, criterion and optimizer, `epochs` passes.
    Returns the mean training loss of each epoch (the first is measured before any step)."""
    model, opt = setup["model"], setup["optimizer"]
    losses = [mean_loss(setup, setup["train_loader"])]
    for _ in range(epochs):
        model.train()
        total, count = 0.0, 0
        for batch in setup["train_loader"]:
            opt.zero_grad()
            loss = _loss(setup, model, batch)
            loss.backward()
            opt.step()
            total, count = total + loss.item(), count + 1
        losses.append(total / count)
    return losses


@torch.no_grad()
def mean_loss(setup: dict, data) -> float:
    setup["model"].eval()
    values = [_loss(setup, setup["model"], b).item() for b in data]
    setup["model"].train()
    return sum(values) / len(values)


@torch.no_grad()
def accuracy(model: nn.Module, data, predict=None) -> float:
    """Share of samples whose predicted class (argmax, or `predict(output)`) is the target."""
    model.eval()
    right = total = 0
    for inputs, targets in data:
        out = model(inputs)
        pred = predict(out) if predict else out.argmax(dim=1)
        right += (pred.reshape(targets.shape) == targets).sum().item()
        total += targets.numel()
    model.train()
    return right / total


@torch.no_grad()
def r2(model: nn.Module, data, transform=None) -> float:
    """Coefficient of determination of the model's outputs against the targets."""
    model.eval()
    outs, ys = [], []
    for inputs, targets in data:
        out = model(inputs)
        outs.append(transform(out) if transform else out)
        ys.append(targets)
    model.train()
    out, y = torch.cat(outs).reshape(-1), torch.cat(ys).reshape(-1).float()
    return 1 - ((out - y) ** 2).sum().item() / ((y - y.mean()) ** 2).sum().item()


def learns(setup: dict, epochs: int, score, floor: float, name: str) -> dict:
    """Train the fixed program as its user would and assert that it learned: the loss
    fell to under half its start and `score()` (accuracy, R²) reached `floor`."""
    losses = train(setup, epochs)
    value = score()
    result = {"first_loss": losses[0], "last_loss": losses[-1], name: value, "epochs": epochs}
    assert losses[-1] < 0.5 * losses[0], f"loss did not fall enough: {result}"
    assert value >= floor, f"{name} {value:.3f} below {floor}: {result}"
    return result
