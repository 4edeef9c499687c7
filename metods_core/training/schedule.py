"""When a run meta-tests while it trains, and when it can first write ``best.ckpt``: pure
functions of the recipe, without Lightning, so that planning an ablation stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING

from metods_core.training_log import VALIDATION_PREFIX

if TYPE_CHECKING:
    from metods_core.interfaces import Split
    from metods_core.recipe import Recipe


def periodic_every_n_steps(recipe: Recipe, split: Split) -> int | None:
    """How often the recipe meta-tests ``split`` while it trains (None: never)."""
    evaluation = recipe.evaluation
    if split == "validation" and evaluation.validation_every_n_steps is not None:
        return evaluation.validation_every_n_steps
    return evaluation.every_n_steps


def first_best_step(recipe: Recipe) -> tuple[int | None, str]:
    """Return the first outer step at which a run of ``recipe`` that keeps the best checkpoint
    can write ``best.ckpt``, and the recipe field that sets it.

    Ranked by a training metric, the end of its first window (``trainer.best_window``); by a
    ``validation/`` metric, its first validation meta-test
    (``evaluation.validation_every_n_steps``, None where it meta-tests nothing while it trains).
    """
    metric = recipe.trainer.best_metric
    if metric is not None and metric.startswith(VALIDATION_PREFIX):
        return periodic_every_n_steps(recipe, "validation"), "evaluation.validation_every_n_steps"
    return recipe.trainer.best_window, "trainer.best_window"
