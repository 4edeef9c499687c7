"""Meta-training with Lightning: the module, the task data module, run directories."""

from metods_core.training.module import MetaLearningModule, NonFiniteError
from metods_core.training.trainer import (
    TrainingInterrupted,
    create_trainer,
    resume_run,
    train_recipe,
)

__all__ = [
    "MetaLearningModule",
    "NonFiniteError",
    "TrainingInterrupted",
    "create_trainer",
    "resume_run",
    "train_recipe",
]
