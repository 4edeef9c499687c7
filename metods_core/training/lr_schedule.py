"""The learning rate over the run's budget (``trainer.lr_schedule``).

The schedule is a function of the outer step and the budget alone, not optimizer state: a
resumed run sets the same rates as an uninterrupted one, and a resume that changes
``meta_optimizer.lr`` or ``trainer.max_steps`` moves the whole schedule with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metods_core.recipe.schema import TrainerConfig


def learning_rate_factor(trainer: TrainerConfig, outer_step: int) -> float:
    """Return the multiplier of the recipe's rates at ``outer_step`` (0-based, before it).

    ``constant``: 1. ``linear``: from 1 at step 0 to ``final_lr_fraction`` at ``max_steps``.
    """
    if trainer.lr_schedule == "constant":
        return 1.0
    progress = min(outer_step / trainer.max_steps, 1.0)
    return 1.0 - (1.0 - trainer.final_lr_fraction) * progress


def apply_learning_rates(
    optimizer: torch.optim.Optimizer, base_rates: Sequence[float], factor: float
) -> None:
    """Set each parameter group's ``lr`` to its recipe rate ``base_rates[i]`` times ``factor``."""
    if len(base_rates) != len(optimizer.param_groups):
        raise ValueError(
            f"{len(base_rates)} base rates for {len(optimizer.param_groups)} parameter groups"
        )
    for group, rate in zip(optimizer.param_groups, base_rates, strict=True):
        group["lr"] = rate * factor
