"""Errors that end a run with exit 2, and one-line summaries of the user's exceptions."""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from typing import Optional


class UsageError(Exception):
    """Could not run: a bad argument, target or config (exit 2, one line on stderr)."""


class TargetError(UsageError):
    """The target could not be found, imported or built."""


class ConfigError(UsageError):
    """The config file is missing, malformed or holds an unknown key."""


class DataError(Exception):
    """The user's data cannot feed a check (an empty loader, a batch of an unknown form)."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_LIBRARY_DIRS = tuple(
    os.path.abspath(p) + os.sep
    for p in {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    if p
)


def is_user_file(filename: str) -> bool:
    """True for the user's own source, not nndoctor's, the stdlib's or an installed package's."""
    if not filename or filename.startswith("<"):
        return False
    path = os.path.abspath(filename)
    if path.startswith(_PACKAGE_DIR + os.sep):
        return False
    return not path.startswith(_LIBRARY_DIRS) and "site-packages" not in path


def user_frame(exc: BaseException) -> Optional[traceback.FrameSummary]:
    """The deepest traceback frame in the user's code, or None."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if is_user_file(frame.filename):
            return frame
    return None


def short_path(filename: str) -> str:
    try:
        rel = os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        return filename
    return filename if rel.startswith(".." + os.sep + "..") else rel


def user_cause(exc: BaseException) -> BaseException:
    """The exception to report: a library that wraps the user's error (torchinfo's
    "Failed to run torchinfo") hides it in `__cause__`; the first link of the chain
    raised from the user's code is the one that says what is wrong, and where. With
    no user frame (a forward called with the wrong arguments fails in torch's call),
    the root of the chain still says what is wrong; the wrapper does not."""
    seen: set = set()
    link: Optional[BaseException] = exc
    root = exc
    while link is not None and id(link) not in seen:
        if user_frame(link) is not None:
            return link
        seen.add(id(link))
        root, link = link, link.__cause__
    return root


def summarize(exc: BaseException) -> str:
    """`Type: first line of the message (at file.py:12 in forward)`."""
    exc = user_cause(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{line} ({short_path(exc.filename)}:{exc.lineno})"
    frame = user_frame(exc)
    if frame is not None:
        line += f" (at {short_path(frame.filename)}:{frame.lineno} in {frame.name})"
    return line


def print_error(message: str, debug: bool = False, exc: Optional[BaseException] = None) -> None:
    if debug and exc is not None:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"nndoctor: error: {message}", file=sys.stderr)
