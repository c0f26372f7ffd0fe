"""Segmentation masks loaded as greyscale 0-255 values into CrossEntropyLoss for 2 classes.

Source: "return torch._C._nn.cross_entropy_loss(input, target, weight,
_Reduction.get_enum(reduction), ignore_index) IndexError: Target 192 is out of bounds" —
https://github.com/milesial/Pytorch-UNet/issues/291

The bug: UNet with n_classes=2 and CrossEntropyLoss, trained on masks whose pixels are
raw greyscale values (0 ... 255, with anti-aliased edges such as 192) instead of class
indices: `IndexError: Target 192 is out of bounds`.
The fix (the maintainer's answer): load the masks as class indices 0 ... n_classes-1
(here: `mask > 127`).
"""

import torch
import torch.nn as nn
from _common import generator, learns, loader, seeded

EXPECTED = [("label-out-of-range", "outc")]


class TinyUNet(nn.Module):
    def __init__(self, n_classes: int = 2):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(16, 8, 3, padding=1), nn.ReLU())
        self.outc = nn.Conv2d(8, n_classes, 1)

    def forward(self, x):
        return self.outc(self.up(self.down(x)))


def _data(as_indices: bool):
    """Noisy images of bright discs; their masks as greyscale PNGs would hold them (0/255,
    anti-aliased edge pixels in between)."""
    g = generator(12)
    n, size = 128, 16
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx = torch.randint(4, 12, (2, n), generator=g)
    r = torch.randint(3, 6, (n,), generator=g)
    dist = ((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2).float().sqrt()
    grey = (255 * (r[:, None, None] + 0.5 - dist).clamp(0, 1)).round().long()
    x = (grey.float() / 255 + 0.3 * torch.randn(n, size, size, generator=g))[:, None]
    mask = (grey > 127).long() if as_indices else grey
    return x, mask


def _build(as_indices: bool) -> dict:
    seeded()
    model = TinyUNet()
    return {"model": model, "train_loader": loader(*_data(as_indices), batch_size=16),
            "criterion": nn.CrossEntropyLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=3e-3)}


def buggy() -> dict:
    return _build(as_indices=False)


def fixed() -> dict:
    return _build(as_indices=True)


def verify_fixed() -> dict:
    from _common import accuracy
    s = fixed()
    return learns(s, 10, lambda: accuracy(s["model"], s["train_loader"]), 0.95, "pixel_accuracy")


if __name__ == "__main__":
    print(verify_fixed())
