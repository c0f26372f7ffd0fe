"""`DoctorCallback` for the Hugging Face `transformers.Trainer`.

    trainer = Trainer(model, args, train_dataset=..., eval_dataset=..., callbacks=[DoctorCallback()])

The evaluation loss (`eval_loss`) of each evaluation feeds `overfitting`.
"""

from __future__ import annotations

from typing import Optional

from transformers import TrainerCallback

from ._common import WatchingCallback


class DoctorCallback(WatchingCallback, TrainerCallback):
    """Watches `trainer.train()` and prints nndoctor's report at its end; `.report` keeps it."""

    def __init__(self, every: int = 50, fail_on: Optional[str] = None, print_report: bool = True):
        WatchingCallback.__init__(self, every=every, fail_on=fail_on, print_report=print_report)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._start(model)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._val_loss((metrics or {}).get("eval_loss"))

    def on_train_end(self, args, state, control, **kwargs):
        self._finish()
