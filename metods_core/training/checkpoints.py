"""Checkpoint files: periodic and final saves, and a readable error for a corrupt one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from metods_core.errors import MetodsError
from metods_core.training.run_dir import CHECKPOINT_DIR, LAST_CHECKPOINT


class CheckpointError(MetodsError):
    """A checkpoint is missing, unreadable, or does not belong to this run."""


OUTER_STEP_KEY = "outer_step"
"""Where a checkpoint keeps the number of outer steps taken (the run's clock)."""

PERIODIC_KEPT = 2
"""How many periodic checkpoints a run keeps (the newest), across resumes too."""


def create_checkpoint_callbacks(run_dir: Path, every_n_steps: int) -> list[Callback]:
    """Save ``step=NNNNNN.ckpt`` and ``last.ckpt`` every ``every_n_steps`` outer steps."""
    return [OuterStepCheckpoints(run_dir / CHECKPOINT_DIR, every_n_steps)]


def _outer_step(pl_module: L.LightningModule) -> int:
    return int(getattr(pl_module, "outer_step", 0))


class OuterStepCheckpoints(Callback):
    """Checkpoints on the run's clock of outer steps (not Lightning's optimizer steps).

    Every ``every_n_steps`` outer steps: ``step=NNNNNN.ckpt`` (the newest ``PERIODIC_KEPT``
    kept) and ``last.ckpt``; ``last.ckpt`` again when training ends. Each file is written
    under a temporary name in its own folder and renamed into place, so a kill during the
    write never leaves a truncated checkpoint under a real name.
    """

    def __init__(self, folder: Path, every_n_steps: int) -> None:
        self.folder = folder
        self.every_n_steps = every_n_steps
        self._saved_step = -1

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        """Save after every ``every_n_steps``-th outer step."""
        step = _outer_step(pl_module)
        if step % self.every_n_steps == 0 and step != self._saved_step:
            periodic = self.folder / f"step={step:06d}.ckpt"
            self._save(trainer, periodic)
            if trainer.is_global_zero:
                _link_or_copy(periodic, self.folder / LAST_CHECKPOINT)
                for old in sorted(self.folder.glob("step=*.ckpt"), reverse=True)[PERIODIC_KEPT:]:
                    old.unlink(missing_ok=True)
            self._saved_step = step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the final state (rank 0 writes, every rank takes part)."""
        self._save(trainer, self.folder / LAST_CHECKPOINT)

    def _save(self, trainer: L.Trainer, path: Path) -> None:
        temporary = path.with_name(f".{path.name}.tmp")
        trainer.save_checkpoint(temporary)
        if trainer.is_global_zero:
            os.replace(temporary, path)


def _link_or_copy(source: Path, destination: Path) -> None:
    """Make ``destination`` a copy of ``source`` atomically (a hard link where possible)."""
    temporary = destination.with_name(f".{destination.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, temporary)
    os.replace(temporary, destination)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Return the run's checkpoints, newest first (``last.ckpt`` before the periodic ones)."""
    folder = run_dir / CHECKPOINT_DIR
    periodic = sorted(folder.glob("step=*.ckpt"), reverse=True)
    last = folder / LAST_CHECKPOINT
    return ([last] if last.exists() else []) + periodic


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU, turning any failure into one clear ``CheckpointError``."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for a truncated or foreign file
        others = [str(p) for p in list_checkpoints(path.parent.parent) if p != path]
        hint = (
            f" Earlier checkpoints of this run: {', '.join(others)}; resume from one with "
            "--checkpoint PATH, or move the damaged file away."
            if others
            else " No other checkpoint of this run exists: start the run again."
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
            f"{run_dir} has no checkpoint to resume from (looked in {run_dir / CHECKPOINT_DIR}); "
            "the run stopped before its first save: start it again"
        )
    read_checkpoint(candidates[0])
    return candidates[0]


def checkpoint_outer_step(checkpoint: dict[str, Any]) -> int:
    """Return the number of outer steps a loaded checkpoint had taken."""
    return int(checkpoint.get(OUTER_STEP_KEY, checkpoint.get("global_step", 0)))
