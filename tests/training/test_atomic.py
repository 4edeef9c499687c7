"""Atomic writes: across file systems, interrupted mid-write, on a full disk; and checkpoint
loading that never runs code."""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
from pathlib import Path

import pytest
import torch

from metods_core.training.atomic import WriteError, atomic_open, save_checkpoint_atomic
from metods_core.training.checkpoint_io import AtomicCheckpointIO
from metods_core.training.loggers import _AtomicCSVWriter

SHM = Path("/dev/shm")


class Payload:
    """Pickles as ``os.mkdir(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_the_payload_is_real_and_never_runs(tmp_path: Path) -> None:
    """The malicious file does run its payload under weights_only=False (so the test means
    something), and Lightning's restore path (AtomicCheckpointIO) refuses it without running."""
    evil, marker = tmp_path / "evil.ckpt", tmp_path / "marker"
    torch.save({"state_dict": {}, "payload": Payload(marker)}, evil)
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    assert not marker.exists()
    torch.load(evil, weights_only=False)
    assert marker.is_dir()


@pytest.mark.skipif(not SHM.is_dir(), reason="no /dev/shm tmpfs here")
def test_checkpoint_written_across_file_systems_without_the_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run folder on a tmpfs (another file system than the temporary directory) gets its
    checkpoint by rename inside that folder: the system temporary directory is never used."""
    folder = Path(tempfile.mkdtemp(dir=SHM))
    try:
        assert os.stat(folder).st_dev != os.stat(tmp_path).st_dev
        monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
        path = folder / "last.ckpt"
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
        loaded = AtomicCheckpointIO().load_checkpoint(path)
        assert torch.equal(loaded["state_dict"]["w"], torch.ones(3))
        assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


def test_a_write_killed_midway_leaves_the_old_file(tmp_path: Path) -> None:
    """An exception (a kill, Ctrl+C) during the write keeps the old file and no temporary."""
    path = tmp_path / "last.ckpt"
    save_checkpoint_atomic({"step": 1}, path)
    old = path.read_bytes()
    with pytest.raises(KeyboardInterrupt), atomic_open(path) as file:
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_full_disk_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC during the write raises WriteError naming the file; the old file stays."""
    path = tmp_path / "last.ckpt"
    save_checkpoint_atomic({"step": 1}, path)
    old = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("metods_core.training.atomic.os.fsync", full)
    with pytest.raises(WriteError, match="No space left on device"):
        save_checkpoint_atomic({"step": 2}, path)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_csv_rows_survive_a_failed_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush that fails keeps the file's rows and the new ones; the next flush writes all."""
    writer = _AtomicCSVWriter(str(tmp_path / "logs"))
    writer.log_metrics({"loss": 1.0}, step=0)
    writer.save()
    writer.log_metrics({"loss": 2.0}, step=1)
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("metods_core.training.atomic.os.fsync", full)
    with pytest.warns(UserWarning, match="kept"):
        writer.save()
    lines = Path(writer.metrics_file_path).read_text().splitlines()
    assert lines == ["loss,step", "1.0,0"]
    monkeypatch.setattr("metods_core.training.atomic.os.fsync", real_fsync)
    writer.log_metrics({"loss": 3.0}, step=2)
    writer.save()
    lines = Path(writer.metrics_file_path).read_text().splitlines()
    assert lines == ["loss,step", "1.0,0", "2.0,1", "3.0,2"]
    assert not list(tmp_path.rglob("*.tmp"))
