"""One compare run per output folder: a second process into the same folder would make the same
data and stage 0 at the same time, or train the same cell twice, each overwriting the other.

    with folder_lock(out):      # RunFolderBusy if another live process holds it
        ...

The lock is an advisory ``flock`` on ``<out>/.compare.lock``: the kernel drops it when its
process ends, however it ends, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".compare.lock"


class RunFolderBusy(RuntimeError):
    """Another live process is running a compare grid into this folder."""


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the block; ``RunFolderBusy`` (naming the holder's pid) if taken."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunFolderBusy(
                f"{out} is in use by another compare run (pid {holder}); wait for it to finish, "
                "or run cells side by side in one run with --jobs N (or another --out)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
