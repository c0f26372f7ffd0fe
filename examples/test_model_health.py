"""nndoctor in a test suite: the marker turns a test into a diagnosis.

    pytest examples/test_model_health.py

`test_healthy_xor` passes. `test_broken_labels` fails on purpose, to show what a
failure looks like: its labels reach 12 while the model has 10 outputs, and the
failure message is nndoctor's findings table (code, where, message, fix).
Relative target paths are read from pytest's rootdir (this repository).
"""

import pytest

from nndoctor.testing import assert_healthy

# Fast checks for every commit: no training run. Add "overfit" (a few seconds on a
# small model) where the suite can afford it.
FAST = ["size", "data", "init"]


@pytest.mark.nndoctor(target="sample_models/xor.py:build", checks=FAST)
def test_healthy_xor():
    pass  # the diagnosis is the test


@pytest.mark.nndoctor(target="sample_models/label_overflow_mlp.py", checks=FAST)
def test_broken_labels():
    pass


def test_with_the_fixture(nndoctor):
    report = nndoctor("sample_models/mlp.py", checks=["data", "init"])
    assert report.status == "pass"


def test_with_assert_healthy():
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    assert_healthy(model, loader, checks=FAST)
