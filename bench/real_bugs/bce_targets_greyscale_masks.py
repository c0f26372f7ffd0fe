"""Binary segmentation with BCE on masks of 0/255: the loss goes negative.

Source: "Negative Loss" — https://github.com/milesial/Pytorch-UNet/issues/65

The bug: the UNet's BCE loss (`BCEWithLogitsLoss`) gets the true masks as loaded, with
values 0 and 255; only the input images were normalised. BCE with targets outside [0, 1]
is unbounded below, so the loss turns negative and keeps falling while the logits run to
+infinity.
The fix (the maintainer's answer): the targets (the true masks) must be between 0 and 1
(here: divide the masks by 255).
"""

import torch
import torch.nn as nn
from _common import learns, loader, seeded
from label_range_greyscale_masks import TinyUNet, _data

EXPECTED = [("label-out-of-range", "outc")]


def _build(scaled: bool) -> dict:
    seeded()
    x, grey = _data(as_indices=False)
    mask = (grey.float() / 255 if scaled else grey.float())[:, None]
    model = TinyUNet(n_classes=1)
    return {"model": model, "train_loader": loader(x, mask, batch_size=16),
            "criterion": nn.BCEWithLogitsLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=3e-3)}


def buggy() -> dict:
    return _build(scaled=False)


def fixed() -> dict:
    return _build(scaled=True)


def verify_fixed() -> dict:
    from _common import accuracy
    s = fixed()
    return learns(s, 10, lambda: accuracy(s["model"], ((x, (m > 0.5).float()) for x, m in s["train_loader"]),
                                          lambda o: (o > 0).float()), 0.95, "pixel_accuracy")


if __name__ == "__main__":
    print(verify_fixed())
