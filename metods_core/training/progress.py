"""A progress bar that counts outer steps out of ``trainer.max_steps``, also after a resume."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class OuterStepProgressBar(TQDMProgressBar):
    """Lightning's bar, positioned on the module's ``outer_step`` with ``max_steps`` as total."""

    def __init__(self, max_steps: int, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.max_steps = max_steps

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        """Position the bar: a resume from a checkpoint saved mid-epoch (a periodic or an
        interrupted one) skips ``on_train_epoch_start``."""
        super().on_train_start(trainer, *args)
        self._count_from_outer_step(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        """Position the bar again, in place of Lightning's reset to 0 of the epoch's batches
        (whose draw would show 0 of max_steps at a negative rate)."""
        self._count_from_outer_step(trainer)

    def _count_from_outer_step(self, trainer: L.Trainer) -> None:
        start = int(getattr(trainer.lightning_module, "outer_step", 0))
        bar = self.train_progress_bar
        # Not ``bar.reset()``: it draws n = 0 against the previous ``initial``, so 0 of
        # max_steps at a negative rate (n - initial < 0).
        bar.total = self.max_steps
        bar.initial = bar.n = bar.last_print_n = start
        bar.start_t = bar.last_print_t = time.time()  # tqdm's clock: the rate counts from here
        bar.set_description("Outer steps")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        """Show the outer-step count and the logged metrics."""
        bar = self.train_progress_bar
        step = int(getattr(pl_module, "outer_step", 0))
        if bar is not None and (step % self.refresh_rate == 0 or step >= self.max_steps):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()
