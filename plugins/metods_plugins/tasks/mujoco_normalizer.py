"""Running observation normalisation for the MuJoCo and Meta-World tasks
(``task.normalize_observations``).

HalfCheetah's 17 observations span two orders of magnitude: under random actions their standard
deviations range from 0.09 (root height) to 7.2 (joint velocities), so the first layer of the
agent sees mostly velocities. Meta-World's positions move by centimetres within a lifetime, so
unnormalised they barely reach the agent beside its previous reward. The normaliser keeps the
running mean and variance of every observation seen in *training* lifetimes (Chan et al.'s
parallel update, float64) and gives the agent ``clip((o - mean) / sqrt(var + eps), -clip,
clip)``, as Stable-Baselines3's VecNormalize. Meta-test lifetimes use the statistics frozen at
the checkpoint, on either split (``freeze_statistics``, called by meta-test). The statistics
are the task sampler's state (``state_dict``/``load_state_dict``), saved in every checkpoint by
``metods_core.training.callbacks.TaskState`` and restored by resume and evaluation. In a
multi-process run each process keeps its own statistics; rank 0's are saved.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from metods_core import ComponentConfig


class RunningObservationNormalizer:
    """Running mean and variance of observations ``(dims,)``; normalises batches ``(B, dims)``.

    Args:
        dims: the observation's size.
        clip: bound of the normalised values.
        eps: added to the variance before the square root.
        max_count: stop merging once the statistics hold at least this many observations (the
            batch that crosses it is merged whole); None: merge every training batch.
    """

    def __init__(
        self, dims: int, clip: float = 10.0, eps: float = 1e-8, max_count: int | None = None
    ) -> None:
        self.mean = np.zeros(dims, dtype=np.float64)
        self.var = np.ones(dims, dtype=np.float64)
        self.count = 0
        self.clip = clip
        self.eps = eps
        self.max_count = max_count
        self.frozen = False
        """Set by :meth:`freeze`: ``observe`` no longer updates, whatever it is told."""

    def freeze(self) -> None:
        """Keep the statistics as they are from now on (meta-test on any split)."""
        self.frozen = True

    def update(self, batch: np.ndarray) -> None:
        """Merge the statistics of ``batch`` ``(B, dims)`` into the running ones (nothing once
        they hold ``max_count`` observations)."""
        batch = np.asarray(batch, dtype=np.float64).reshape(-1, self.mean.shape[0])
        n = batch.shape[0]
        if n == 0 or (self.max_count is not None and self.count >= self.max_count):
            return
        mean, var = batch.mean(axis=0), batch.var(axis=0)
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.var = m2 / total
        self.count = total

    def observe(self, batch: np.ndarray, update: bool) -> np.ndarray:
        """Return ``batch`` ``(B, dims)`` normalised, merging it into the statistics first if
        ``update`` (training lifetimes do; meta-test lifetimes use the frozen statistics) and
        the normaliser was not frozen (:meth:`freeze`)."""
        if update and not self.frozen:
            self.update(batch)
        return self(batch)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Return ``batch`` ``(B, dims)`` normalised (float32); unchanged before any update."""
        if self.count == 0:
            return np.asarray(batch, dtype=np.float32)
        scaled = (np.asarray(batch, dtype=np.float64) - self.mean) / np.sqrt(self.var + self.eps)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """The statistics as plain lists and numbers (safe to load with ``weights_only``)."""
        return {"count": self.count, "mean": self.mean.tolist(), "var": self.var.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore statistics saved by ``state_dict``."""
        mean = np.asarray(state["mean"], dtype=np.float64)
        if mean.shape != self.mean.shape:
            raise ValueError(
                f"observation statistics of size {mean.shape[0]} do not fit {self.mean.shape[0]}"
            )
        self.mean, self.var = mean, np.asarray(state["var"], dtype=np.float64)
        self.count = int(state["count"])


class ObservationStatisticsConfig(ComponentConfig):
    """The field shared by the task samplers with ``normalize_observations`` (their Configs'
    base)."""

    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ("statistics_steps",)

    statistics_steps: int | None = Field(None, gt=0)
    """With ``normalize_observations``: stop updating the running statistics once they hold
    this many training observations (env steps, all tasks together), so that the agent learns
    against fixed inputs; None: update them throughout training. May change on resume. On ML1
    reach they kept moving as the policy learnt (the hand position's standard deviations 20-34 %
    lower at 5e6 env steps than at 2e6), and the 2e6 policy given the 5e6 statistics fell from
    0.60 to 0.27 success (docs/results.md)."""


class ObservationStatistics:
    """A task sampler whose state is its observation statistics (``normalizer``, ``None``
    without ``normalize_observations``), saved in every checkpoint by ``TaskState``."""

    normalizer: RunningObservationNormalizer | None

    def state_dict(self) -> dict[str, Any]:
        """The observation statistics (empty without ``normalize_observations``)."""
        return {} if self.normalizer is None else {"observations": self.normalizer.state_dict()}

    def freeze_statistics(self) -> None:
        """Stop updating the observation statistics, train lifetimes included (meta-test)."""
        if self.normalizer is not None:
            self.normalizer.freeze()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the observation statistics saved by ``state_dict`` (if any)."""
        if self.normalizer is not None and "observations" in state:
            self.normalizer.load_state_dict(state["observations"])
