"""Diagnosing the user's own training run, live (SPEC §8): `nndoctor watch`, `nndoctor.watch()`.

`nndoctor.live.observer` imports torch; this module and `errors` do not.
"""

from __future__ import annotations

from typing import Any, Optional

from .errors import TrainingBug

__all__ = ["TrainingBug", "watch"]


def watch(model: Any = None, optimizer: Any = None, *, every: int = 50,
          fail_on: Optional[str] = None, max_steps: Optional[int] = None):
    """A context manager that watches the training steps taken inside it:

        with nndoctor.watch(model, optimizer) as doc:
            for x, y in loader:
                ...
                doc.log(val_loss=val)      # optional
        print(doc.report)

    With `fail_on` ("error" or "warning"), `TrainingBug` is raised in the loop at the
    step a finding of that severity appears (before that step's update)."""
    from .observer import Watcher

    return Watcher(model, optimizer, every=every, fail_on=fail_on, max_steps=max_steps,
                   target="nndoctor.watch()")
