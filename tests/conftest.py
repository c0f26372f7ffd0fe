"""Shared test helpers: load a sample target, run checks on it."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import snapshots  # noqa: E402

snapshots.pin_cpu_kernels()  # the same floats on every CI machine

SAMPLES = os.path.join(ROOT, "sample_models")
HEALTHY = ["xor", "mlp", "simple_cnn", "text_classifier", "bottleneck"]


def sample_path(name: str) -> str:
    return os.path.join(SAMPLES, f"{name}.py")


def load_sample(name: str, attr: str = "build"):
    """A fresh Setup of sample_models/<name>.py (the target loaded as the CLI does)."""
    from nndoctor.target import load_target

    return load_target(f"{sample_path(name)}:{attr}")


def run_checks_on(name: str, checks, seed: int = 0, settings=None):
    """The Report of `checks` on a freshly built sample."""
    from nndoctor.engine.runner import run_checks

    return run_checks(load_sample(name), checks, settings or {}, target=name, device="cpu", seed=seed)


def codes_of(report) -> set:
    return {f.code for f in report.findings}


def only(report, code: str):
    """The report's one finding with `code` (failing, with all findings, if not exactly one)."""
    found = [f for f in report.findings if f.code == code]
    assert len(found) == 1, [(f.code, f.message) for f in report.findings]
    return found[0]


def seeded_loader(x, y, batch_size: int = 32):
    """A shuffling DataLoader over (x, y) whose order does not depend on the global RNG."""
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size,
                                       shuffle=True, generator=g)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # As nndoctor's runs do on a 2-core machine (nndoctor/engine/threads.py): tests that drive
    # a Session directly would otherwise be many times slower on a loaded CI box.
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _chdir_root(monkeypatch):
    # nndoctor reads ./nndoctor.yaml: run every test from the repo root, where there is none.
    monkeypatch.chdir(ROOT)
    yield


if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_addoption(parser):
    parser.addoption("--update-snapshots", action="store_true", default=False,
                     help="rewrite tests/snapshots/ and the README's outputs instead of comparing")
