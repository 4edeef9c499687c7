"""The best-checkpoint state a run saves in its checkpoints (``BestCheckpoint``'s callback state),
read and edited by the tests of ``trainer.keep_best``."""

from __future__ import annotations

from typing import Any

import torch

from metods_core.run_folder import RunFolder
from metods_core.training.callbacks import BestCheckpoint
from metods_core.training.checkpoints import read_checkpoint

STATE_KEY = BestCheckpoint.__qualname__
"""Where a checkpoint keeps ``BestCheckpoint``'s state, under ``callbacks``."""


def best_state(path: Any) -> dict[str, Any]:
    """Return the best-checkpoint state saved in the checkpoint at ``path``."""
    return read_checkpoint(path)["callbacks"][STATE_KEY]


def set_saved_best_score(folder: RunFolder, score: float) -> None:
    """Rewrite the run's ``last.ckpt`` with ``score`` as the best score so far."""
    checkpoint = torch.load(folder.last_checkpoint, weights_only=True)
    checkpoint["callbacks"][STATE_KEY]["best"] = score
    torch.save(checkpoint, folder.last_checkpoint)
