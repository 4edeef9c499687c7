"""A progress bar that counts outer steps out of ``trainer.max_steps``, also after a resume."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class OuterStepProgressBar(TQDMProgressBar):
    """Lightning's bar, positioned on the module's ``outer_step`` with ``max_steps`` as total."""

    def __init__(self, max_steps: int, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.max_steps = max_steps

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        """Start the bar at the outer step the run resumes from."""
        super().on_train_epoch_start(trainer, *args)
        start = int(getattr(trainer.lightning_module, "outer_step", 0))
        bar = self.train_progress_bar
        bar.reset(total=self.max_steps)
        # Count from the resumed step: with ``initial`` alone, the first draw would show
        # 0 of max_steps and a negative rate (n - initial < 0).
        bar.initial = bar.n = bar.last_print_n = start
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
