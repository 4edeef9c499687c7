"""Task batches as a Lightning data module: one batch of tasks per outer step and rank."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from metods_core.interfaces import TaskBatch, TaskSampler
from metods_core.training.seeding import derive_seed


class TaskBatchStream(IterableDataset):
    """An endless stream of training task batches; batch ``k`` depends only on (seed, rank, k)."""

    def __init__(
        self, sampler: TaskSampler, batch_tasks: int, seed: int, rank: int, start_step: int
    ) -> None:
        self.sampler = sampler
        self.batch_tasks = batch_tasks
        self.seed = seed
        self.rank = rank
        self.start_step = start_step

    def __iter__(self) -> Iterator[TaskBatch]:
        step = self.start_step
        while True:
            generator = torch.Generator().manual_seed(
                derive_seed(self.seed, "tasks", self.rank, step)
            )
            yield self.sampler.sample(self.batch_tasks, "train", generator)
            step += 1


class TaskDataModule(L.LightningDataModule):
    """Feeds each rank its own task batches, resuming at the module's outer step."""

    def __init__(self, sampler: TaskSampler, batch_tasks: int, seed: int) -> None:
        super().__init__()
        self.sampler = sampler
        self.batch_tasks = batch_tasks
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        """Return a loader of task batches (no worker processes: sampling is cheap)."""
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        module = trainer.lightning_module if trainer is not None else None
        start = int(getattr(module, "outer_step", 0))
        stream = TaskBatchStream(self.sampler, self.batch_tasks, self.seed, rank, start)
        return DataLoader(stream, batch_size=None, num_workers=0)
