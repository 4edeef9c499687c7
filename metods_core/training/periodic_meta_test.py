"""Meta-test the held-out tasks during training (``evaluation.every_n_steps``): the test curve.

Meta-RL papers plot meta-test performance against training steps (the MetODS paper's Meta-World
figure has a dotted meta-test line beside its training curves). ``PeriodicMetaTest`` runs the
same meta-test as ``metods evaluate`` every ``evaluation.every_n_steps`` outer steps and logs the
mean of every per-task metric as ``test/<key>`` (``test/success``, ``test/mean_reward``) to the
run's loggers, at the same ``step`` as that outer step's ``train/`` metrics; ``metods curve RUN
--column test/success`` reads it back.

It changes nothing of the training: the held-out lifetimes run on a sampler of their own, built
once from the recipe and given the training sampler's state (the observation statistics) before
each meta-test, then frozen as ``metods evaluate`` freezes them, and they draw from generators
seeded from the recipe's seed, never from the global random state (tested: the meta-parameters
after training are the same to the bit with and without it). So the value logged at outer step
N is the one ``metods evaluate --episodes E`` gives on the checkpoint of step N, with ``E`` =
``evaluation.periodic_episodes``. Only rank 0 meta-tests; the other processes of a multi-device
run wait for it at their next collective operation.

A task with a validation split (``TaskSampler.has_validation_split``: Meta-World's
``validation_tasks``) gets a second instance, ``PeriodicMetaTest(recipe, "validation")``, every
``evaluation.validation_every_n_steps`` outer steps (default ``every_n_steps``): it logs
``validation/<key>`` and keeps its latest means for ``BestCheckpoint``
(``trainer.best_metric: validation/success``). It runs before the checkpoints of its outer step
are saved, so that they hold the best-checkpoint state that includes it; the test meta-test
runs after them.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from metods_core.components import create_task_sampler
from metods_core.interfaces import Split, TaskSampler
from metods_core.recipe import Recipe
from metods_core.run_folder import metric_key
from metods_core.training.module import MetaLearningModule
from metods_core.training.schedule import periodic_every_n_steps
from metods_core.training.task_state import restore_state
from metods_core.training_log import TEST_PREFIX, VALIDATION_PREFIX

_PREFIXES: dict[str, str] = {"test": TEST_PREFIX, "validation": VALIDATION_PREFIX}


class PeriodicMetaTest(Callback):
    """Every ``evaluation.every_n_steps`` outer steps (validation:
    ``validation_every_n_steps``, default ``every_n_steps``), meta-test ``split`` and log
    ``<split>/<key>`` (``test/<key>``, or ``validation/<key>``).

    The validation instance does nothing for a task without a validation split.

    Args:
        recipe: the run's recipe; its ``evaluation`` section says how often, how many
            lifetimes (``periodic_episodes``, default ``episodes``; for validation
            ``validation_episodes``, default ``periodic_episodes``), in batches of how many
            (``batch_tasks``), greedy or sampled.
        split: ``test`` (the held-out tasks) or ``validation``.
    """

    def __init__(self, recipe: Recipe, split: Split = "test") -> None:
        if split not in _PREFIXES:
            raise ValueError(f"PeriodicMetaTest meta-tests test or validation, not {split!r}")
        evaluation = recipe.evaluation
        every = periodic_every_n_steps(recipe, split)
        if every is None:
            needed = "every_n_steps"
            if split == "validation":
                needed = "validation_every_n_steps or every_n_steps"
            raise ValueError(f"PeriodicMetaTest({split!r}) needs evaluation.{needed}")
        self.recipe = recipe
        self.split: Split = split
        self.prefix = _PREFIXES[split]
        self.every = every
        self.episodes = evaluation.periodic_episodes or evaluation.episodes
        if split == "validation":
            self.episodes = evaluation.validation_episodes or self.episodes
        self.latest: dict[str, float] = {}
        """The means of the last meta-test on this process (rank 0; empty elsewhere)."""
        self.latest_step = -1
        """The outer step of ``latest`` (-1: none yet)."""
        self._sampler: TaskSampler | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        """At every ``every``-th outer step, meta-test on rank 0 and log the means."""
        assert isinstance(pl_module, MetaLearningModule)
        step = pl_module.outer_step
        if step % self.every != 0 or not trainer.is_global_zero:
            return
        if self.split == "validation" and not pl_module.sampler.has_validation_split():
            return
        metrics = self.meta_test(pl_module)
        self.latest, self.latest_step = metrics, step
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step - 1)  # the CSV's step counts from 0

    def meta_test(self, pl_module: MetaLearningModule) -> dict[str, float]:
        """Run the split's lifetimes with the module's agent; return ``<split>/<key>`` means
        (metrics undefined on every lifetime, such as a class no lifetime drew, are left out)."""
        from metods_core.evaluation import meta_test, summarise  # evaluation imports training

        if self._sampler is None:
            self._sampler = create_task_sampler(self.recipe)
        save_state = getattr(pl_module.sampler, "state_dict", None)  # optional (TaskState)
        if callable(save_state):
            restore_state(self._sampler, {"sampler": save_state()})
        evaluation = self.recipe.evaluation
        per_task = meta_test(
            pl_module.agent,
            self._sampler,
            self.episodes,
            evaluation.batch_tasks,
            evaluation.greedy,
            self.recipe.seed,
            self.split,
        )
        scalars = {name: values for name, values in per_task.items() if values.dim() == 1}
        summary = summarise(scalars)
        means = (float(summary[metric_key(name)]) for name in scalars)
        return {
            f"{self.prefix}{metric_key(name)}": mean
            for name, mean in zip(scalars, means, strict=True)
            if math.isfinite(mean)
        }
