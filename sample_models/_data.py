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


def manifold_classification(n, dim, classes, latent=16, seed=0, noise=0.1):
    """Inputs on a `latent`-dimensional plane in `dim` dimensions (as images lie near a
    low-dimensional manifold), labelled by a linear teacher on the latent code: learnable
    and, unlike a teacher over all `dim` inputs, learnable from ~1000 samples."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent, generator=g)
    lift = torch.randn(latent, dim, generator=g) / latent ** 0.5
    x = z @ lift + noise * torch.randn(n, dim, generator=g)
    y = (z @ torch.randn(latent, classes, generator=g)).argmax(dim=1)
    return x, y


def loader(*tensors, batch_size=32, shuffle=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle, generator=g)


def split(x, y, n_val):
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])
