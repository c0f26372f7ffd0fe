"""Mel-spectrogram outputs (B, T, F) against targets (B, 1, T, F): the loss broadcasts.

Source: "UserWarning: Using a target size (torch.Size([4, 1, 128, 80])) that is different
to the input size (torch.Size([4, 128, 80])). This will likely lead to incorrect results
due to broadcasting. Please en" — https://github.com/auspicious3000/autovc/issues/66

The bug: AutoVC's training compares decoder outputs of shape (4, 128, 80) with targets of
shape (4, 1, 128, 80); MSELoss broadcasts them to (4, 4, 128, 80), so every output is
pulled towards all four utterances of the batch, and the model learns their average.
The fix (the reporter's resolution for their PyTorch): make the shapes agree (remove the
extra `unsqueeze(1)` so outputs and targets are both (B, 128, 80)).
"""

import torch
import torch.nn as nn
from _common import generator, learns, loader, seeded

EXPECTED = [("shape-broadcast", None)]

T, MELS = 16, 20


def _data():
    """Noisy 'spectrograms' whose clean version the model must reconstruct (denoising)."""
    g = generator(8)
    n = 256
    basis = torch.randn(4, T, MELS, generator=g)
    clean = torch.einsum("nk,ktm->ntm", torch.randn(n, 4, generator=g), basis) / 2
    noisy = clean + 0.3 * torch.randn(n, T, MELS, generator=g)
    return noisy, clean


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(MELS, 64), nn.ReLU(), nn.Linear(64, MELS))

    def forward(self, x):
        return self.net(x)


def _build(unsqueeze_target: bool) -> dict:
    seeded()
    noisy, clean = _data()
    target = clean.unsqueeze(1) if unsqueeze_target else clean
    model = Decoder()
    return {"model": model, "train_loader": loader(noisy, target, batch_size=4),
            "criterion": nn.MSELoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)}


def buggy() -> dict:
    return _build(unsqueeze_target=True)


def fixed() -> dict:
    return _build(unsqueeze_target=False)


def verify_fixed() -> dict:
    s = fixed()
    from _common import r2
    return learns(s, 5, lambda: r2(s["model"], s["train_loader"]), 0.8, "r2")


if __name__ == "__main__":
    print(verify_fixed())
