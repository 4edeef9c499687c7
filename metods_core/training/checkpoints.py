"""Checkpoint files: their names in a run, reading one (a readable error for a corrupt one), and
its outer step. Without Lightning, so that ``metods evaluate`` does not load it; the callbacks
that write them are in :mod:`metods_core.training.checkpoint_callbacks`."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from metods_core.errors import MetodsError
from metods_core.run_folder import RunFolder
from metods_core.training.atomic import load_checkpoint_safely


class CheckpointError(MetodsError):
    """A checkpoint is missing, unreadable, or does not belong to this run."""


OUTER_STEP_KEY = "outer_step"
"""Where a checkpoint keeps the number of outer steps taken (the run's clock)."""

PERIODIC_KEPT = 2
"""How many periodic checkpoints a run keeps (the newest), across resumes too."""


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
