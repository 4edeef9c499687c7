"""Keep the checkpoint of the best training score (``trainer.keep_best``) beside the last one."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from metods_core.errors import MetodsError
from metods_core.run_folder import RunFolder
from metods_core.training.task_state import TASK_STATE_KEY, restore_state
from metods_core.training_log import TRAIN_PREFIX, VALIDATION_PREFIX

if TYPE_CHECKING:
    from metods_core.training.periodic_meta_test import PeriodicMetaTest


class BestCheckpoint(Callback):
    """Save ``best.ckpt`` whenever a training metric, averaged over a window, is the best yet.

    The metric is ``trainer.best_metric`` (``train/<name>`` in the logs), or the task sampler's
    ``main_metric()`` when that is None: the training return on most tasks, the success rate
    on Meta-World. The outer steps are cut into consecutive windows of ``window`` steps (steps
    1..w, w+1..2w, ...); at the end of each window, the mean of the logged metric over it
    (averaged over the processes of a multi-device run, so that every rank takes the same
    decision) is compared with the best window mean so far, and if higher, the checkpoint of
    that moment is written as :attr:`RunFolder.best_checkpoint` (atomically, by the Trainer's
    checkpoint I/O). The metric's name, the best score and the partial window are this
    callback's state, saved in every checkpoint (Lightning's callback state), so a resumed run
    keeps them; a resume that changes the metric starts a new comparison. It must run before
    ``OuterStepCheckpoints`` in the Trainer's callbacks, so that a checkpoint saved at the end
    of a window carries the updated state.

    A metric named ``validation/<name>`` is instead the mean of the periodic meta-test of the
    task's validation split (``validation``, which must run before this callback), compared at
    each outer step that meta-tested it, ``window`` aside: the score of rank 0, where the
    meta-test ran, decides on every rank.

    Args:
        run: the run folder.
        window: outer steps per window (at least 1).
        metric: the training metric's name without ``train/``, or ``validation/<name>``;
            None: the task's main metric.
        validation: the periodic meta-test of the validation split (None: the run has none).
    """

    def __init__(
        self,
        run: RunFolder,
        window: int,
        metric: str | None = None,
        validation: PeriodicMetaTest | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.run = run
        self.window = window
        self.metric = metric
        """The metric compared (without ``train/``); resolved from the task at setup if None."""
        self.validation = validation
        self.best = -math.inf
        """The best window mean so far (-inf before the first window ends)."""
        self.best_step = -1
        """The outer step at which ``best.ckpt`` was saved (-1: none yet)."""
        self._sum: torch.Tensor | None = None
        self._count = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Name the metric: the recipe's, or the task sampler's main metric (Lightning calls
        this before it restores a checkpoint's callback state)."""
        sampler = getattr(pl_module, "sampler", None)
        if self.metric is None:
            self.metric = str(sampler.main_metric()) if sampler is not None else "episode_reward"
        if not self.metric.startswith(VALIDATION_PREFIX):
            return
        if self.validation is None:
            raise MetodsError(
                f"trainer.best_metric is {self.metric}, a metric of the periodic meta-test of "
                "the validation split, but the run meta-tests nothing while it trains: set "
                "evaluation.validation_every_n_steps or evaluation.every_n_steps (for example 10)"
            )
        if sampler is None or not sampler.has_validation_split():
            raise MetodsError(
                f"trainer.best_metric is {self.metric}, but the task has no validation split: "
                "give it one (Meta-World: task.validation_tasks=10) or rank by a training "
                "metric (trainer.best_metric=success)"
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        """Add this outer step's metric to the window; at its end, save if it is the best."""
        assert self.metric is not None
        if self.metric.startswith(VALIDATION_PREFIX):
            self._compare_validation(trainer, pl_module)
            return
        key = f"{TRAIN_PREFIX}{self.metric}"
        value = trainer.callback_metrics.get(key)
        if value is None:
            logged = sorted(
                name.removeprefix(TRAIN_PREFIX)
                for name in trainer.callback_metrics
                if name.startswith(TRAIN_PREFIX)
            )
            raise MetodsError(
                f"trainer.keep_best compares the training metric '{key}', which this run does "
                f"not log; set trainer.best_metric to one it logs ({', '.join(logged)}) or "
                "trainer.keep_best=false"
            )
        value = value.detach().to(torch.float64)
        self._sum = value if self._sum is None else self._sum + value.to(self._sum.device)
        self._count += 1
        step = int(getattr(pl_module, "outer_step", 0))
        if step % self.window != 0:
            return
        mean = trainer.strategy.reduce(self._sum / self._count, reduce_op="mean")
        score = float(mean)  # one host sync per window
        self._sum, self._count = None, 0
        self._save_if_best(trainer, score, step)

    def _compare_validation(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """At an outer step the validation split was meta-tested, save if it is the best."""
        assert self.validation is not None and self.metric is not None
        step = int(getattr(pl_module, "outer_step", 0))
        if step % self.validation.every != 0:
            return
        score = math.nan
        if trainer.is_global_zero:
            if self.validation.latest_step != step:
                raise RuntimeError("BestCheckpoint must run after the validation meta-test")
            if self.metric not in self.validation.latest:
                logged = ", ".join(sorted(self.validation.latest)) or "none"
                raise MetodsError(
                    f"trainer.best_metric is {self.metric}, which the validation meta-test does "
                    f"not log; it logs {logged}"
                )
            score = self.validation.latest[self.metric]
        score = float(trainer.strategy.broadcast(score, src=0))
        self._save_if_best(trainer, score, step)

    def _save_if_best(self, trainer: L.Trainer, score: float, step: int) -> None:
        if math.isfinite(score) and score > self.best:
            self.best, self.best_step = score, step
            trainer.save_checkpoint(self.run.best_checkpoint, weights_only=False)

    def state_dict(self) -> dict[str, Any]:
        """The metric, the best score, its step and the partial window (plain data)."""
        partial = 0.0 if self._sum is None else float(self._sum)
        return {
            "metric": self.metric,
            "window": self.window,
            "best": self.best,
            "best_step": self.best_step,
            "sum": partial,
            "count": self._count,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the best score if it was of the same metric (a checkpoint without the
        metric's name predates the choice and compared the return); the partial window too, if
        the window length is unchanged."""
        if state_dict.get("metric", "episode_reward") != self.metric:
            return
        self.best = float(state_dict["best"])
        self.best_step = int(state_dict["best_step"])
        if int(state_dict.get("window", -1)) == self.window and int(state_dict["count"]) > 0:
            self._sum = torch.tensor(float(state_dict["sum"]), dtype=torch.float64)
            self._count = int(state_dict["count"])


class TaskState(Callback):
    """Save the task sampler's own state in every checkpoint and restore it on resume.

    A sampler with state (the MuJoCo tasks' running observation statistics) offers
    ``state_dict()`` and ``load_state_dict(state)``; this callback stores that state as its
    own (Lightning's callback state, plain data) and gives it back on resume. Evaluation reads
    it with :func:`~metods_core.training.task_state.restore_task_state`. A sampler without
    these methods is left alone.
    """

    def __init__(self) -> None:
        self.sampler: Any = None
        self._pending: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        """Its entry in a checkpoint's callback states (read by :func:`restore_task_state`)."""
        return TASK_STATE_KEY

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Find the module's task sampler (before any checkpoint is restored)."""
        self.sampler = getattr(pl_module, "sampler", None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Apply a state restored before the sampler was known."""
        self.sampler = getattr(pl_module, "sampler", self.sampler)
        if self._pending is not None:
            self.load_state_dict(self._pending)

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state (empty if it has none)."""
        save = getattr(self.sampler, "state_dict", None)
        return {"sampler": save()} if callable(save) else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Give the saved state back to the sampler (now, or once it is known)."""
        if self.sampler is None:
            self._pending = state_dict
            return
        self._pending = None
        restore_state(self.sampler, state_dict)
