"""Label masks read through to_tensor() and cast with .long(): every class index becomes 0.

Source: "Questions about image enhancement" — https://github.com/lorenmt/reco/issues/19

The bug: ReCo's data pipeline turns label images into tensors with
`transforms_f.to_tensor(label)`, which rescales the uint8 class indices 0 ... 3 to
0 ... 3/255; cast with `.long()` they all become class 0, and the model is trained to
predict background everywhere. The maintainer: "The `transform_f` function will
automatically renormalise data to the range of 0 - 1".
The fix (the repository's line): `label = (transforms_f.to_tensor(label) * 255).long()`.
"""

import torch
import torch.nn as nn
from _common import generator, learns, loader, seeded

EXPECTED = [("constant-targets", None)]

CLASSES = 4


def _to_tensor(label_uint8: torch.Tensor) -> torch.Tensor:
    """torchvision's to_tensor on a uint8 image: float in [0, 1] (value / 255)."""
    return label_uint8.float().div(255)


def _data(times_255: bool):
    """Images with one square whose brightness gives its class (1 ... 3); background is 0."""
    g = generator(27)
    n, size = 128, 8
    cls = torch.randint(1, CLASSES, (n,), generator=g)
    top, left = torch.randint(0, size - 4, (2, n), generator=g)
    x = 0.1 * torch.rand(n, 1, size, size, generator=g)
    mask = torch.zeros(n, size, size, dtype=torch.uint8)
    for i, c in enumerate(cls.tolist()):
        r, k = top[i].item(), left[i].item()
        x[i, 0, r:r + 4, k:k + 4] += 0.3 * c
        mask[i, r:r + 4, k:k + 4] = c
    label = _to_tensor(mask)
    return x, ((label * 255).round() if times_255 else label).long()


def _build(times_255: bool) -> dict:
    seeded()
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, CLASSES, 1))
    return {"model": model, "train_loader": loader(*_data(times_255), batch_size=16),
            "criterion": nn.CrossEntropyLoss(), "optimizer": torch.optim.Adam(model.parameters(), lr=1e-2)}


def buggy() -> dict:
    return _build(times_255=False)


def fixed() -> dict:
    return _build(times_255=True)


@torch.no_grad()
def _object_accuracy(model, data) -> float:
    """Accuracy on the squares' pixels alone (the background, ~89% of the pixels, is class 0
    and would make a model that predicts only background look 75% right)."""
    right = total = 0
    for x, mask in data:
        on = mask > 0
        right += (model(x).argmax(dim=1)[on] == mask[on]).sum().item()
        total += on.sum().item()
    return right / total


def verify_fixed() -> dict:
    s = fixed()
    return learns(s, 20, lambda: _object_accuracy(s["model"], s["train_loader"]), 0.9, "object_pixel_accuracy")


if __name__ == "__main__":
    print(verify_fixed())
