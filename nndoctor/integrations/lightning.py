"""`DoctorCallback` for Lightning 2.x, under both `lightning` and `pytorch_lightning`.

    trainer = lightning.Trainer(callbacks=[DoctorCallback()])
    trainer.fit(model, train_loader, val_loader)
    trainer.callbacks[...].report

Steps are the optimizer's (Lightning's closure runs forward and backward inside
`optimizer.step`; the watcher measures after it then). Validation losses logged
as `val_loss` (or any metric whose name has "val" and "loss") feed `overfitting`.
"""

from __future__ import annotations

from typing import Optional

from ._common import WatchingCallback


def _bases() -> tuple:
    bases: list[type] = []
    try:
        from lightning.pytorch import Callback
        bases.append(Callback)
    except ImportError:
        pass
    try:
        from pytorch_lightning import Callback as PLCallback
        if PLCallback not in bases:
            bases.append(PLCallback)
    except ImportError:
        pass
    if not bases:
        raise ImportError("nndoctor.integrations.lightning needs Lightning: pip install 'nndoctor[lightning]'")
    return tuple(bases)


def _val_metric(metrics: dict) -> Optional[float]:
    if "val_loss" in metrics:
        return metrics["val_loss"]
    for name, value in metrics.items():
        if "val" in name and "loss" in name:
            return value
    return None


class DoctorCallback(WatchingCallback, *_bases()):  # type: ignore[misc]  # Lightning's Callback, found at import
    """Watches `trainer.fit` and prints nndoctor's report at its end; `.report` keeps it."""

    def __init__(self, every: int = 50, fail_on: Optional[str] = None, print_report: bool = True):
        WatchingCallback.__init__(self, every=every, fail_on=fail_on, print_report=print_report)
        self._compiled_step = False  # trainer.fit got a compiled module (see on_fit_start)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._start(pl_module)
        # trainer.fit(torch.compile(module)): Lightning compiles training_step itself, and every
        # module hook inside it runs in the graph (lightning.pytorch.utilities.compile.from_compiled)
        self._compiled_step = getattr(pl_module, "_compiler_ctx", None) is not None
        if self._compiled_step and self.watcher is not None:
            self.watcher.notes.append(
                "training_step is compiled (trainer.fit(torch.compile(module))): the layers inside are read "
                "from the module (their order, their Dropout/BatchNorm modes), but the activation scan and "
                "a NaN's re-run need a module's inputs, which the compiled step keeps in its graph: neither runs")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._compiled_step and self.watcher is not None:
            self.watcher.probe.enter_compiled_step(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._val_loss(_val_metric(dict(trainer.callback_metrics)))

    def on_fit_end(self, trainer, pl_module) -> None:
        self._finish()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._finish(interrupted=isinstance(exception, KeyboardInterrupt))
