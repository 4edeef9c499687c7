"""Gymnasium vector envs built once per process and lent to one batched env at a time.

Building MuJoCo simulators costs far more than stepping them for a short lifetime, so a task
sampler keeps the vector envs it built and lends an idle one of the right size to each new
batched env; the batched env gives it back in ``close()``. A reused simulator behaves exactly
like a new one because every lifetime starts with a seeded ``reset`` (the tasks' own seeds).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Literal

import gymnasium as gym

VectorStrategy = Literal["sync", "async"]

PooledVectorEnv = gym.vector.SyncVectorEnv | gym.vector.AsyncVectorEnv
"""The vector envs a pool builds (their ``reset`` takes one seed per sub-environment)."""


class SimulatorPool:
    """Idle vector envs by size; ``acquire`` lends one (building it if none is idle)."""

    def __init__(self, make_env: Callable[[], gym.Env], strategy: VectorStrategy = "sync") -> None:
        self.make_env = make_env
        self.strategy = strategy
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
        if self.strategy == "async":
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
        """Close every vector env built (lent ones included)."""
        _close_all(self._all)
        self._idle.clear()


def _close_all(vector_envs: list[PooledVectorEnv]) -> None:
    while vector_envs:
        vector_envs.pop().close()
