"""`nndoctor watch SCRIPT.py [ARGS...]` / `-m MODULE`: the user's script, unchanged, under a Watcher."""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from dataclasses import dataclass
from typing import Optional

from ..errors import UsageError
from .errors import StopWatching

_OURS = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
         os.path.dirname(os.path.abspath(runpy.__file__)) + os.sep + "runpy.py", "<frozen runpy>")


@dataclass
class Outcome:
    how: str  # "ended", "stopped", "raised", "exited", "interrupted"
    detail: Optional[str] = None


def run(script: Optional[str], module: Optional[str], args: list, watcher, seed: Optional[int] = None) -> Outcome:
    """Run the script as `__main__` with its own argv and folder on sys.path, under `watcher`."""
    if module is None:
        if not script:
            raise UsageError("watch needs a SCRIPT.py or -m MODULE")
        if not os.path.isfile(script):
            raise UsageError(f"no such script: {script}")
        path = os.path.abspath(script)
        argv, folder = [path] + list(args), os.path.dirname(path)
    else:
        argv, folder = [module] + list(args), os.getcwd()
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = argv
    sys.path.insert(0, folder)
    if seed is not None:
        _seed(seed)
    try:
        watcher.start()
        try:
            if module is None:
                runpy.run_path(path, run_name="__main__")
            else:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
        finally:
            watcher.stop()
    except StopWatching as stop:
        return Outcome("stopped", str(stop))
    except KeyboardInterrupt:
        watcher.interrupted = True
        return Outcome("interrupted")
    except SystemExit as exc:
        code = exc.code
        if code is None or code == 0:
            return Outcome("ended")
        if isinstance(code, str):
            print(code, file=sys.stderr)
        return Outcome("exited", str(code))
    except ImportError as exc:
        if module is not None and getattr(exc, "name", None) == module.split(".")[0]:
            raise UsageError(f"no module named {module!r}") from None
        _print_user_traceback(exc)
        return Outcome("raised", f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        _print_user_traceback(exc)
        return Outcome("raised", f"{type(exc).__name__}: {exc}")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return Outcome("ended")


def _seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy
        numpy.random.seed(seed)
    except ImportError:
        pass


def _print_user_traceback(exc: BaseException) -> None:
    """The exception as Python shows it, without nndoctor's and runpy's frames on top."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OURS):
        tb = tb.tb_next
    sys.stderr.flush()
    traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
