"""What both callbacks share: a Watcher started at the start of training, the report at its end."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from ..live.observer import Watcher
    from ..report.findings import Report


class WatchingCallback:
    """Starts a Watcher when training starts; at its end keeps `.report`, prints it and
    writes the JSON to $NNDOCTOR_REPORT when that is set."""

    def __init__(self, every: int = 50, fail_on: Optional[str] = None, print_report: bool = True):
        self.every, self.fail_on, self.print_report = every, fail_on, print_report
        self.watcher: Optional[Watcher] = None
        self.report: Optional[Report] = None

    def _start(self, model: Any) -> None:
        from ..live.observer import Watcher

        if self.watcher is not None:  # a previous fit that ended without its end hook
            self._finish()
        self.report = None
        watcher = Watcher(model, every=self.every, fail_on=self.fail_on,
                          target=f"{type(self).__module__.rpartition('.')[2]} run")
        self.watcher = watcher
        watcher.start()

    def _val_loss(self, value: Any) -> None:
        if self.watcher is None or value is None:
            return
        value = float(value)
        if math.isfinite(value):
            self.watcher.log(val_loss=value)

    def _finish(self, interrupted: bool = False) -> None:
        if self.watcher is None:
            return
        watcher, self.watcher = self.watcher, None
        watcher.interrupted = interrupted
        watcher.stop()
        self.report = watcher.report
        from ..live.command import write_env_report

        write_env_report(self.report)
        if self.print_report:
            from rich.console import Console

            from ..live import render  # noqa: F401  (the report's "watch" section)
            from ..render.rich import print_report

            print_report(self.report, Console())
