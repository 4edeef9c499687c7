"""Checkpoint files: periodic and final saves, and a readable error for a corrupt one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from metods_core.errors import MetodsError
from metods_core.training.run_dir import CHECKPOINT_DIR, LAST_CHECKPOINT


class CheckpointError(MetodsError):
    """A checkpoint is missing, unreadable, or does not belong to this run."""


def create_checkpoint_callbacks(run_dir: Path, every_n_steps: int) -> list[Callback]:
    """Save ``step=NNNNNN.ckpt`` every ``every_n_steps`` (two kept), and ``last.ckpt`` with it."""
    periodic = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        filename="step={step:06d}",
        auto_insert_metric_name=False,
        every_n_train_steps=every_n_steps,
        save_top_k=2,
        monitor="step",
        mode="max",
        save_last=False,
    )
    return [periodic, LastCheckpoint(run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT, every_n_steps)]


class LastCheckpoint(Callback):
    """Keep ``last.ckpt`` current: every ``every_n_steps`` steps and when training ends."""

    def __init__(self, path: Path, every_n_steps: int) -> None:
        self.path = path
        self.every_n_steps = every_n_steps

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        """Save after every ``every_n_steps``-th outer step."""
        if trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the final state (rank 0 writes, every rank takes part)."""
        trainer.save_checkpoint(self.path)


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
