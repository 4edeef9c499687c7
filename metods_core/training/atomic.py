"""Atomic file writes and code-free checkpoint loading, for every file a run writes.

A file is written under a temporary name in its own folder, flushed and ``fsync``-ed, then
renamed over the real name, and the folder is ``fsync``-ed: a kill or a full disk at any point
leaves either the old file or the new one, never a truncated one, and never a stray temporary
file after a failure. The temporary file is never in the system's temporary directory, so the
rename is atomic even when the run folder is on another file system (a tmpfs, a network disk).

Checkpoints are loaded with ``weights_only=True``: only tensors, numbers, strings and containers
can come out of them, so a checkpoint from elsewhere can never run code.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from metods_core.errors import MetodsError

TEMPORARY_SUFFIX = ".tmp"
"""Temporary files are ``.<name>.tmp`` beside their destination."""


class WriteError(MetodsError):
    """A file of the run could not be written (disk full, read-only, no permission)."""


def temporary_path(path: Path) -> Path:
    """Return the temporary name ``path`` is written under before the rename."""
    return path.with_name(f".{path.name}{TEMPORARY_SUFFIX}")


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot open or sync a folder
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``path`` for writing atomically: the content appears under ``path`` only on success.

    Raises:
        WriteError: the write failed (the temporary file is removed, ``path`` is untouched).
    """
    path = Path(path)
    temporary = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise WriteError(
            f"cannot write {path}: {error.strerror or error}; no partial file was left and the "
            "files written before are unchanged (free disk space or fix the folder's "
            "permissions, then resume)"
        ) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w") as file:
        file.write(text)


def save_checkpoint_atomic(checkpoint: dict[str, Any], path: Path) -> None:
    """Serialise ``checkpoint`` in memory, then write it to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with atomic_open(path, "wb") as file:
        file.write(buffer.getbuffer())


def load_checkpoint_safely(path: Path, map_location: Any = "cpu") -> Any:
    """Load ``path`` with ``weights_only=True``: anything but plain data is refused.

    Raises:
        pickle.UnpicklingError: the file holds other objects (torch's refusal).
        OSError, RuntimeError: the file is missing, truncated or not a torch file.
    """
    return torch.load(path, map_location=map_location, weights_only=True)
