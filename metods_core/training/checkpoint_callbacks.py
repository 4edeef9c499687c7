"""The callbacks that write a run's checkpoints on its clock of outer steps: periodic and final
saves, and ``best.ckpt`` (the files themselves: :mod:`metods_core.training.checkpoints`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from metods_core.run_folder import RunFolder
from metods_core.training.atomic import TEMPORARY_SUFFIX, atomic_open, temporary_path
from metods_core.training.callbacks import BestCheckpoint, TaskState
from metods_core.training.checkpoints import PERIODIC_KEPT

if TYPE_CHECKING:
    from metods_core.training.periodic_meta_test import PeriodicMetaTest


def create_checkpoint_callbacks(
    run_dir: Path,
    every_n_steps: int,
    best_window: int | None = None,
    best_metric: str | None = None,
    validation: PeriodicMetaTest | None = None,
) -> list[Callback]:
    """Save ``step=NNNNNN.ckpt`` and ``last.ckpt`` every ``every_n_steps`` outer steps, and with
    ``best_window``, ``best.ckpt`` at the best window mean of the training metric
    ``best_metric`` (None: the task's main metric; see ``BestCheckpoint``), before the others:
    its state must be up to date when they save. The task sampler's state is saved in all of
    them (``TaskState``). ``validation``, the periodic meta-test of a validation split, gives
    the scores of a ``validation/<name>`` metric; it must run before these callbacks."""
    run = RunFolder(run_dir)
    best: list[Callback] = (
        [] if best_window is None else [BestCheckpoint(run, best_window, best_metric, validation)]
    )
    return [TaskState(), *best, OuterStepCheckpoints(run, every_n_steps)]


def _outer_step(pl_module: L.LightningModule) -> int:
    return int(getattr(pl_module, "outer_step", 0))


class OuterStepCheckpoints(Callback):
    """Checkpoints on the run's clock of outer steps (not Lightning's optimizer steps).

    Every ``every_n_steps`` outer steps: ``step=NNNNNN.ckpt`` (the newest ``PERIODIC_KEPT``
    kept) and ``last.ckpt``; ``last.ckpt`` again when training ends, and at the end of the
    outer step during which an interrupt (Ctrl+C) arrived. The Trainer's checkpoint I/O is
    :class:`~metods_core.training.checkpoint_io.AtomicCheckpointIO`: each file is written under a
    temporary name in its own folder, fsync-ed and renamed into place, so a kill or a full disk
    during the write never leaves a truncated checkpoint under a real name, and a failed write
    leaves no file at all. Older periodic files are removed only after a new one is in place.
    """

    def __init__(self, run: RunFolder, every_n_steps: int) -> None:
        self.run = run
        self.folder = run.checkpoints
        self.every_n_steps = every_n_steps
        self._saved_step = -1
        self.interrupted = False
        """Set by the SIGINT handler: save and stop at the end of the current outer step."""
        self.interrupted_at: int | None = None
        """The outer step saved after an interrupt (None when training was not interrupted)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Remove temporary files that a killed earlier write left behind."""
        if trainer.is_global_zero and self.folder.is_dir():
            for stale in self.folder.glob(f".*{TEMPORARY_SUFFIX}"):
                stale.unlink(missing_ok=True)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        """Save after every ``every_n_steps``-th outer step, or now after an interrupt."""
        step = _outer_step(pl_module)
        due = step % self.every_n_steps == 0 or self.interrupted
        if due and step != self._saved_step:
            periodic = self.run.periodic_checkpoint(step)
            trainer.save_checkpoint(periodic, weights_only=False)
            if trainer.is_global_zero:
                _link_or_copy(periodic, self.run.last_checkpoint)
                for old in self.run.periodic_checkpoints()[PERIODIC_KEPT:]:
                    old.unlink(missing_ok=True)
            self._saved_step = step
        if self.interrupted:
            self.interrupted_at = step
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the final state (rank 0 writes, every rank takes part)."""
        trainer.save_checkpoint(self.run.last_checkpoint, weights_only=False)


def _link_or_copy(source: Path, destination: Path) -> None:
    """Make ``destination`` a copy of ``source`` atomically (a hard link where possible)."""
    temporary = temporary_path(destination)
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
        os.replace(temporary, destination)
    except OSError:  # a file system without hard links
        temporary.unlink(missing_ok=True)
        with atomic_open(destination, "wb") as file, open(source, "rb") as original:
            shutil.copyfileobj(original, file)
