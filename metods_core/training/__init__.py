"""Meta-training with Lightning: the module, the task data module, run directories.

The names below are imported on first use (a module ``__getattr__``, PEP 562), so that the
package's Lightning-free modules (run folders, checkpoint files, seeding, atomic writes) can be
imported by ``metods evaluate`` without loading Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metods_core._lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "MetaLearningModule": "metods_core.training.module",
    "NonFiniteError": "metods_core.training.module",
    "TrainingInterrupted": "metods_core.training.trainer",
    "create_trainer": "metods_core.training.trainer",
    "resume_run": "metods_core.training.trainer",
    "train_recipe": "metods_core.training.trainer",
}

__all__ = [
    "MetaLearningModule",
    "NonFiniteError",
    "TrainingInterrupted",
    "create_trainer",
    "resume_run",
    "train_recipe",
]

if TYPE_CHECKING:
    from metods_core.training.module import MetaLearningModule, NonFiniteError
    from metods_core.training.trainer import (
        TrainingInterrupted,
        create_trainer,
        resume_run,
        train_recipe,
    )


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
