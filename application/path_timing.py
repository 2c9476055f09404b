"""Timestamps along an execution's path through the processes, for the latency breakdown.

Off unless `record_to()` is called (the CLI does when `AGENT_LEDGER_PATH_TIMING` names a
directory): then `mark(point, key)` keeps `(point, key, wall-clock ns)` in memory and each
process writes its marks to a file of its own in that directory when it exits.
`bench/breakdown.py` joins the files of every process by execution id and position. Wall
clock, so that the marks of different processes on one machine compare; off, a mark costs
one global lookup.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path

_marks: list[tuple[str, str, int]] | None = None
_path: Path | None = None
_lock = threading.Lock()


def mark(point: str, *key: object) -> None:
    """Note that `point` was reached now, for `key` (an execution id, a position, or both);
    the key is made into text only while marks are kept."""
    if _marks is not None:
        _marks.append((point, " ".join(map(str, key)), time.time_ns()))  # append is atomic


def record_to(directory: Path, role: str) -> None:
    """Keep marks from now on; `save()` (or the exit) writes them to
    `directory/<role>-<pid>.tsv`."""
    global _marks, _path
    with _lock:
        if _marks is not None:
            return
        _marks, _path = [], directory / f"{role}-{os.getpid()}.tsv"
    directory.mkdir(parents=True, exist_ok=True)
    atexit.register(save)


def save() -> None:
    """Write the marks kept so far (a process ended by a re-raised signal skips atexit)."""
    if _path is not None:
        with _path.open("w") as out:
            out.writelines(f"{point}\t{key}\t{ns}\n" for point, key, ns in _marks or [])
