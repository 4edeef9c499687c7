"""Checkpoint files: periodic and final saves, and a readable error for a corrupt one."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from metods_core.errors import MetodsError
from metods_core.run_folder import RunFolder
from metods_core.training.atomic import (
    TEMPORARY_SUFFIX,
    atomic_open,
    load_checkpoint_safely,
    temporary_path,
)
from metods_core.training.callbacks import BestCheckpoint, TaskState

if TYPE_CHECKING:
    from metods_core.training.periodic_meta_test import PeriodicMetaTest


class CheckpointError(MetodsError):
    """A checkpoint is missing, unreadable, or does not belong to this run."""


OUTER_STEP_KEY = "outer_step"
"""Where a checkpoint keeps the number of outer steps taken (the run's clock)."""

PERIODIC_KEPT = 2
"""How many periodic checkpoints a run keeps (the newest), across resumes too."""


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
    :class:`~metods_core.training.atomic.AtomicCheckpointIO`: each file is written under a
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


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Return the run's checkpoints, newest first (``last.ckpt`` before the periodic ones)."""
    run = RunFolder(run_dir)
    periodic = run.periodic_checkpoints()
    last = run.last_checkpoint
    return ([last] if last.exists() else []) + periodic


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU, turning any failure into one clear ``CheckpointError``."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = load_checkpoint_safely(path)
    except pickle.UnpicklingError as error:  # weights_only=True refused an object
        parts = [part.strip() for part in str(error).split("\n\n") if part.strip()]
        found = [part for part in parts if "GLOBAL" in part or "Unsupported" in part]
        reason = (found or parts[-1:] or ["an unsupported object"])[0].splitlines()[0][:200]
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors, numbers, strings and "
            f"containers, and was refused without running anything ({reason}). metods "
            "checkpoints hold only plain data; do not load this file with weights_only=False "
            "unless you wrote it yourself."
        ) from None
    except Exception as error:  # torch raises many types for a truncated or foreign file
        others = [str(p) for p in list_checkpoints(path.parent.parent) if p != path]
        hint = (
            f" Earlier checkpoints of this run: {', '.join(others)}; use one with "
            "--checkpoint PATH, or move the damaged file away."
            if others
            else f" No other checkpoint of this run exists.{_start_again(path.parent.parent)}"
        )
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {error}); it is "
            f"probably truncated or corrupt.{hint}"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a metods checkpoint (no state_dict inside)")
    for name, tensor in checkpoint["state_dict"].items():
        if (
            torch.is_tensor(tensor)
            and tensor.is_floating_point()
            and not torch.isfinite(tensor).all()
        ):
            raise CheckpointError(
                f"checkpoint {path} holds non-finite values in {name}; resume from an earlier "
                "checkpoint with --checkpoint PATH"
            )
    return checkpoint


def find_resume_checkpoint(run_dir: Path, explicit: Path | None = None) -> Path:
    """Return the checkpoint to resume ``run_dir`` from, checked to be readable."""
    if explicit is not None:
        read_checkpoint(explicit)
        return explicit
    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise CheckpointError(
            f"{run_dir} has no checkpoint (looked in {RunFolder(run_dir).checkpoints}): the run "
            f"stopped before its first save.{_start_again(run_dir)}"
        )
    read_checkpoint(candidates[0])
    return candidates[0]


CHECKPOINT_NAMES = ("last", "best")
"""Names that ``--checkpoint`` accepts for the run's own ``last.ckpt`` and ``best.ckpt``."""


def named_checkpoint(run_dir: Path, checkpoint: Path | str | None) -> Path | None:
    """Return ``checkpoint``, with ``last`` and ``best`` (not files here) read as the run's own.

    Raises:
        CheckpointError: ``best`` was asked for, but the run has no ``best.ckpt``.
    """
    if checkpoint is None or str(checkpoint) not in CHECKPOINT_NAMES or Path(checkpoint).exists():
        return None if checkpoint is None else Path(checkpoint)
    run = RunFolder(run_dir)
    if str(checkpoint) == "last":
        return run.last_checkpoint
    if not run.best_checkpoint.is_file():
        raise CheckpointError(
            f"{run_dir} has no {run.best_checkpoint.name}: the run was trained without "
            "trainer.keep_best=true, or has not yet reached the step that first writes it (the "
            "end of its first trainer.best_window; ranked by a validation/ metric, its first "
            "validation meta-test); resume it with "
            f"`metods train --resume {run_dir} trainer.keep_best=true`"
        )
    return run.best_checkpoint


def _start_again(run_dir: Path) -> str:
    """Advice that works: a new folder (training into one that holds a run is refused)."""
    if not RunFolder(run_dir).is_run():
        return ""
    return (
        f" Train it again in a new folder: `metods train {RunFolder(run_dir).recipe} --run-dir "
        f"NEW_DIR` (or delete {run_dir} first)."
    )


def checkpoint_outer_step(checkpoint: dict[str, Any]) -> int:
    """Return the number of outer steps a loaded checkpoint had taken."""
    return int(checkpoint.get(OUTER_STEP_KEY, checkpoint.get("global_step", 0)))
