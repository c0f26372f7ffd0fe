"""nndoctor: a command-line doctor for PyTorch training."""

__version__ = "0.1.0"

__all__ = ["__version__", "Setup", "TrainingBug", "diagnose", "watch"]


def __getattr__(name):
    # Lazy: `import nndoctor` (and so `nndoctor --help`) must not import torch.
    if name == "Setup":
        from .target import Setup
        return Setup
    if name == "diagnose":
        from .api import diagnose
        return diagnose
    if name in ("watch", "TrainingBug"):
        from . import live
        return getattr(live, name)
    raise AttributeError(f"module 'nndoctor' has no attribute {name!r}")
