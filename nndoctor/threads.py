"""How many CPU threads torch uses for nndoctor's runs."""

from __future__ import annotations

import os


def configure_threads() -> None:
    """Honour NNDOCTOR_NUM_THREADS; otherwise keep torch's default."""
    value = os.environ.get("NNDOCTOR_NUM_THREADS")
    if value:
        import torch

        torch.set_num_threads(max(1, int(value)))
