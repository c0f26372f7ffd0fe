"""The exceptions a watched run raises into the user's loop. No torch."""

from __future__ import annotations


class TrainingBug(Exception):
    """A finding reached `fail_on` during a watched run; `.finding` is that Finding."""

    def __init__(self, finding):
        self.finding = finding
        where = f" at {finding.where}" if finding.where else ""
        super().__init__(f"{finding.code}{where}: {finding.message}")


class StopWatching(BaseException):
    """Ends the watched script cleanly (--max-steps, --max-seconds). A BaseException, so that
    the script's own `except Exception:` does not swallow it."""
