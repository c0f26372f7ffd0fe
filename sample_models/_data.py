"""Seeded synthetic data for the sample models (no downloads).

Imported by its siblings: nndoctor puts a target's folder on sys.path.
"""

import torch
from torch.utils.data import DataLoader, TensorDataset


def teacher_classification(n, shape, classes, seed=0, scale=1.0):
    """Inputs ~ N(0, scale²) of `shape`, labelled by a fixed random linear teacher: learnable."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g) * scale
    w = torch.randn(int(torch.tensor(shape).prod()), classes, generator=g)
    y = (x.reshape(n, -1) @ w).argmax(dim=1)
    return x, y


def loader(*tensors, batch_size=32, shuffle=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle, generator=g)


def split(x, y, n_val):
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])
