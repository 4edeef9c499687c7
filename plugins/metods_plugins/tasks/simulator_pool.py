"""Gymnasium vector envs built once per process and lent to one batched env at a time.

Building MuJoCo simulators costs far more than stepping them for a short lifetime, so a task
sampler keeps the vector envs it built and lends an idle one of the right size to each new
batched env; the batched env gives it back in ``close()``. A reused simulator behaves exactly
like a new one because every lifetime starts with a seeded ``reset`` (the tasks' own seeds).

With ``workers`` (``task.workers``), the pool lends ``ShardedVectorEnv``s instead: the same
interface, with the simulators living in worker processes (``simulator_workers.py``), each
stepping a contiguous share of the batch in its own sync vector env (``MuJoCoStepper``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from metods_plugins.tasks.simulator_workers import SimulatorWorkers, StepperGroup, Steppers

VectorStrategy = Literal["sync", "async"]


class MuJoCoStepper:
    """Lends sync vector envs of a (sync) pool to groups, one group per ``ShardedVectorEnv``
    (by an integer id), and steps a group: the worker side of ``task.workers``."""

    def __init__(self, make_env: Callable[[], gym.Env]) -> None:
        self.pool = SimulatorPool(make_env)
        self.groups: dict[int, gym.vector.SyncVectorEnv] = {}

    def acquire(self, group: int, size: int) -> None:
        """Lend ``group`` a vector env of ``size`` simulators."""
        lent = self.pool.acquire(size)
        assert isinstance(lent, gym.vector.SyncVectorEnv)
        self.groups[group] = lent

    def release(self, group: int) -> None:
        """Give ``group``'s vector env back to the pool."""
        self.pool.release(self.groups.pop(group))

    def reset(self, group: int, seeds: list[int | None] | None) -> np.ndarray:
        """Reset ``group``'s simulators (seeded, or each continuing its own RNG with None);
        return the observations ``(size, dims)``."""
        observation, _ = self.groups[group].reset(seed=seeds)
        return observation

    def step(
        self, group: int, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step ``group``'s simulators with ``actions`` ``(size, dims)``: Gymnasium's vector
        step."""
        return self.groups[group].step(actions)

    def close(self) -> None:
        """Close every simulator this stepper's pool built."""
        self.pool.close()


class ShardedVectorEnv:
    """A vector env whose simulators step in worker processes, a contiguous share each.

    The part of Gymnasium's vector env API that ``MuJoCoBatchedEnv`` uses: ``num_envs``,
    ``reset(seed=...)`` with one seed per simulator (or none) and ``step``, with the shares'
    results concatenated in order (``info``'s arrays key by key).
    """

    def __init__(self, steppers: Steppers, num_envs: int) -> None:
        self.num_envs = num_envs
        self._group = StepperGroup(steppers, num_envs)
        self._group.call("acquire", [(share.stop - share.start,) for share in self._group.shares])

    def reset(self, seed: list[int | None] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every simulator (``seed``: one per simulator, or None to continue their
        RNGs)."""
        seeds = [None if seed is None else seed[share] for share in self._group.shares]
        return np.concatenate(self._group.call("reset", [(part,) for part in seeds])), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every simulator with its row of ``actions``."""
        parts = self._group.call("step", [(actions[share],) for share in self._group.shares])
        observation, reward, terminated, truncated, infos = zip(*parts, strict=True)
        info = {key: np.concatenate([part[key] for part in infos]) for key in infos[0]}
        return (
            np.concatenate(observation),
            np.concatenate(reward),
            np.concatenate(terminated),
            np.concatenate(truncated),
            info,
        )

    def close(self) -> None:
        """Give the simulators back to the workers' pools (nothing once they stopped)."""
        if not self._group.steppers.closed:
            self._group.each("release")


PooledVectorEnv = gym.vector.SyncVectorEnv | gym.vector.AsyncVectorEnv | ShardedVectorEnv
"""The vector envs a pool builds (their ``reset`` takes one seed per sub-environment)."""


class SimulatorPool:
    """Idle vector envs by size; ``acquire`` lends one (building it if none is idle)."""

    def __init__(
        self, make_env: Callable[[], gym.Env], strategy: VectorStrategy = "sync", workers: int = 0
    ) -> None:
        self.make_env = make_env
        self.strategy = strategy
        self.workers = workers
        """With more than 0, the vector envs are ``ShardedVectorEnv``s over this many worker
        processes (started on the first ``acquire``)."""
        self._steppers: SimulatorWorkers | None = None
        self._idle: dict[int, list[PooledVectorEnv]] = {}
        self._all: list[PooledVectorEnv] = []
        self.built = 0
        """How many vector envs this pool has built (for tests and benchmarks)."""
        weakref.finalize(self, _close_all, self._all)

    def acquire(self, num_envs: int) -> PooledVectorEnv:
        """Lend a vector env of ``num_envs`` sub-environments."""
        idle = self._idle.get(num_envs)
        if idle:
            return idle.pop()
        fns = [self.make_env for _ in range(num_envs)]
        vector_env: PooledVectorEnv
        if self.workers > 0:
            if self._steppers is None:
                self._steppers = SimulatorWorkers(
                    partial(MuJoCoStepper, self.make_env), self.workers
                )
            vector_env = ShardedVectorEnv(self._steppers, num_envs)
        elif self.strategy == "async":
            # Worker processes step the simulators in parallel; "forkserver" keeps them free of
            # the parent's torch threads and state.
            vector_env = gym.vector.AsyncVectorEnv(fns, context="forkserver")
        else:
            vector_env = gym.vector.SyncVectorEnv(fns)
        self._all.append(vector_env)
        self.built += 1
        return vector_env

    def release(self, vector_env: PooledVectorEnv) -> None:
        """Take back a lent vector env; it is reset before its next use."""
        self._idle.setdefault(vector_env.num_envs, []).append(vector_env)

    def close(self) -> None:
        """Close every vector env built (lent ones included), and the workers if any."""
        _close_all(self._all)
        self._idle.clear()
        if self._steppers is not None:
            self._steppers.close()


def _close_all(vector_envs: list[PooledVectorEnv]) -> None:
    while vector_envs:
        vector_envs.pop().close()
