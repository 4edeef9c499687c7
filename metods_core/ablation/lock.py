"""One ablation at a time per output folder: an advisory file lock its runs' processes share."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from metods_core.errors import MetodsError


@contextlib.contextmanager
def hold_lock(path: Path, wait_s: float = 10.0) -> Iterator[int | None]:
    """Hold an exclusive ``flock`` on ``path``; yield its descriptor (None where unsupported).

    Children given the descriptor (``pass_fds``) share the lock, so it stays held until the
    last of them exits, even if this process is killed: a second ``metods ablate`` on the same
    folder then waits ``wait_s`` seconds and refuses instead of racing the orphans.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unguarded
        yield None
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise MetodsError(
                        f"another `metods ablate` (or one of its runs) is still working in "
                        f"{path.parent}; wait for it to end, or stop it first"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield fd
    finally:
        os.close(fd)
