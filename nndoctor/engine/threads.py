"""How many CPU threads torch uses while nndoctor runs.

Measured on a 2-core machine with other work on it (the CI case), one training
step with torch's default of 2 threads against 1 thread: MLP 83 ms vs 4.3 ms,
SimpleCNN 343 vs 31, bidirectional LSTM 5.7 s vs 99 ms, Transformer encoder
819 vs 149 (sample models, bench/threads.py). Intra-op threads spin-wait on a
busy core, so on two cores we use one. With more cores torch's default stays.
"""

from __future__ import annotations

import contextlib
import os

SMALL_MACHINE_CORES = 2  # at or below this many usable cores, one thread wins (measured above)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def chosen_threads():
    """NNDOCTOR_NUM_THREADS if set; 1 on a machine of ≤ 2 cores; else None (torch's default)."""
    value = os.environ.get("NNDOCTOR_NUM_THREADS")
    if value:
        return max(1, int(value))
    return 1 if usable_cores() <= SMALL_MACHINE_CORES else None


@contextlib.contextmanager
def limited_threads():
    """Use the chosen thread count for a run, and put the user's setting back after."""
    import torch

    wanted = chosen_threads()
    previous = torch.get_num_threads()
    if wanted is not None and wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
