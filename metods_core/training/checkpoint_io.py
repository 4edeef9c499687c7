"""Lightning's checkpoint I/O plugin with the atomic writes and code-free loads of
:mod:`metods_core.training.atomic` (kept apart so that module imports no Lightning)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from metods_core.training.atomic import load_checkpoint_safely, save_checkpoint_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with atomic writes and ``weights_only=True`` loading.

    Given to the Trainer as a plugin, so both ``trainer.save_checkpoint`` and the restore of
    ``trainer.fit(ckpt_path=...)`` go through it.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically (temporary file beside it, fsync, rename)."""
        save_checkpoint_atomic(checkpoint, Path(path))

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable[..., Any] | Any = "cpu",
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load ``path`` with ``weights_only=True`` whatever the caller asks."""
        loaded = load_checkpoint_safely(Path(path), map_location)
        assert isinstance(loaded, dict)
        return loaded
