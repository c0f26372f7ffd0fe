"""Synthetic data shared by the sample scripts: learnable, small, the same on every run."""

import torch


def blobs(n=4096, dim=20, classes=4, seed=0):
    """Class-dependent Gaussian clusters: a small MLP reaches a low loss in a few hundred steps."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 0.5  # overlapping: the loss stays noisy
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] + torch.randn(n, dim, generator=g)
    return x, y


def batches(x, y, batch_size=64, seed=0):
    """An endless stream of shuffled minibatches."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[i:i + batch_size]
            yield x[idx], y[idx]


def images(n=2048, classes=4, size=12, seed=0):
    """Tiny 1-channel images: each class a bright square at its own place, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, 1, size, size, generator=g) * 0.5
    for c in range(classes):
        r, col = divmod(c, 2)
        x[y == c, :, r * 6:r * 6 + 6, col * 6:col * 6 + 6] += 1.5
    return x, y


def sequences(n=2048, length=12, vocab=16, seed=0):
    """Token sequences labelled by whether token 1 occurs more often than token 2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, length), generator=g)
    y = ((x == 1).sum(1) > (x == 2).sum(1)).long()
    return x, y
