"""A batch of Meta-World simulators, one per task, stepped as lifetimes of rollouts.

``MetaWorldSimulators`` builds Meta-World environments once per process, per task class, and
lends idle ones to each new batched env (given back by ``close()``); a lent simulator is set to
its task with Meta-World's own ``set_task`` and reseeded, so a reused simulator lives exactly
the lifetime a new one would.

``MetaWorldStepper`` steps the simulators lent to one batched env; it lives in this process, or
one lives in each worker process of ``task.workers`` (``simulator_workers.py``), stepping a share
of the batch. ``MetaWorldBatchedEnv`` steps them behind the torch ``BatchedEnv`` API. A lifetime is
``rollouts`` rollouts of ``rollout_steps`` steps of the same task. On the last step of a rollout
``info["episode_boundary"]`` is set and, unless the lifetime is over, every simulator is reset
(Meta-World's reset puts the robot and objects back at the task's fixed start; the goal stays):
the agent keeps its synapses across the boundary. The last step of the lifetime is
``truncated``; Meta-World never terminates (success does not end a rollout). With a
``normalizer`` the agent sees normalised observations (``task.normalize_observations``; the
statistics are updated by training lifetimes only, see ``mujoco_normalizer.py``). Given
``class_names`` (ML10's classes), it also reports success per task class
(:func:`class_success_metric`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metods_core import BatchedEnv, MetodsError
from metods_plugins.tasks.lifetime_clock import LifetimeClock
from metods_plugins.tasks.mujoco_normalizer import RunningObservationNormalizer
from metods_plugins.tasks.simulator_workers import InProcessSteppers, StepperGroup, Steppers


def class_success_metric(env_name: str) -> str:
    """Return the name of the success metric of one task class: ``success/<env_name>``
    (``success/pick-place-v3``), logged as ``train/success/<env_name>`` in training."""
    return f"success/{env_name}"


class MetaWorldSimulators:
    """Idle Meta-World environments by task class; ``acquire`` lends one per task."""

    def __init__(self, build: Callable[[str], Any]) -> None:
        self.build = build
        self._idle: dict[str, list[Any]] = {}
        self.built = 0
        """How many simulators this pool has built (for tests and benchmarks)."""

    def acquire(self, env_names: list[str]) -> list[Any]:
        """Lend one simulator of each class in ``env_names`` (building those not idle)."""
        lent = []
        for name in env_names:
            idle = self._idle.get(name)
            if idle:
                lent.append(idle.pop())
            else:
                lent.append(self.build(name))
                self.built += 1
        return lent

    def release(self, env_names: list[str], simulators: list[Any]) -> None:
        """Take back lent simulators; each is set to a task and reset before its next use."""
        for name, simulator in zip(env_names, simulators, strict=True):
            self._idle.setdefault(name, []).append(simulator)


class MetaWorldStepper:
    """Steps groups of simulators lent by a pool, one group per batched env (by an integer
    id): in the parent (``task.workers: 0``) or in a worker process (``simulator_workers.py``).

    Observations come back as stacked rows ``(group size, 39)``, as the simulators give them.
    """

    def __init__(self, pool: MetaWorldSimulators) -> None:
        self.pool = pool
        self.groups: dict[int, tuple[list[str], list[Any]]] = {}
        """Each lent group's task classes and simulators."""

    def acquire(self, group: int, env_names: list[str]) -> None:
        """Lend ``group`` one simulator of each class in ``env_names``."""
        self.groups[group] = (env_names, self.pool.acquire(env_names))

    def release(self, group: int) -> None:
        """Give ``group``'s simulators back to the pool."""
        env_names, simulators = self.groups.pop(group)
        self.pool.release(env_names, simulators)

    def simulators(self, group: int) -> list[Any]:
        """Return ``group``'s simulators."""
        return self.groups[group][1]

    def start(self, group: int, tasks: list[Any], seeds: list[int]) -> np.ndarray:
        """Set each simulator to its task, seed it and reset it; return the first
        observations."""
        for simulator, task, seed in zip(self.simulators(group), tasks, seeds, strict=True):
            simulator.set_task(task)
            simulator.seed(seed)
        return self.reset(group)

    def reset(self, group: int) -> np.ndarray:
        """Reset every simulator of ``group`` (a rollout boundary); return the observations."""
        return np.stack([simulator.reset()[0] for simulator in self.simulators(group)])

    def step(self, group: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step each simulator of ``group`` with its row of ``actions`` ``(size, 4)``; return
        the observations ``(size, 39)``, Meta-World's rewards ``(size,)`` and its success flags
        ``(size,)``."""
        simulators = self.simulators(group)
        rows, rewards = [], np.empty(len(simulators))
        successes = np.empty(len(simulators), dtype=bool)
        for i, simulator in enumerate(simulators):
            observation, reward, _, _, info = simulator.step(actions[i])
            rows.append(observation)
            rewards[i] = reward
            successes[i] = bool(info["success"])
        return np.stack(rows), rewards, successes


class MetaWorldBatchedEnv(BatchedEnv):
    """Meta-World simulators, one per task, as a torch ``BatchedEnv`` (see the module doc)."""

    def __init__(
        self,
        steppers: Steppers,
        env_names: list[str],
        tasks: list[Any],
        seeds: list[int],
        rollout_steps: int,
        rollouts: int,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Box,
        device: torch.device,
        normalizer: RunningObservationNormalizer | None = None,
        update_normalizer: bool = False,
        columns: list[int] | None = None,
        class_names: Sequence[str] = (),
        reward_scale: float = 1.0,
    ) -> None:
        self.reward_scale = reward_scale
        """Factor on the simulators' rewards (the task's ``reward_scale``)."""
        self.class_names = tuple(class_names)
        """The task classes whose success ``lifetime_metrics`` reports one by one (none for
        ML1: its one class's success is ``success``)."""
        self.columns = columns
        """The observation columns the agent sees (``None``: all); ``observation_space`` is
        already theirs."""
        self.normalizer = normalizer
        self.update_normalizer = update_normalizer
        self.env_names = env_names
        self._group = StepperGroup(steppers, len(env_names))
        """This env's simulators in ``steppers``: a ``MetaWorldStepper`` in this process, or one
        in each worker process (``task.workers``), each stepping a contiguous share."""
        self._open = True
        self._call("acquire", [(env_names[share],) for share in self._group.shares])
        self.tasks = tasks
        self.seeds = seeds
        self.num_envs = len(env_names)
        self.rollout_steps = rollout_steps
        self.rollouts = rollouts
        self.lifetime_steps = rollout_steps * rollouts
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.device = device
        self._low = np.asarray(observation_space.low, dtype=np.float64)
        self._high = np.asarray(observation_space.high, dtype=np.float64)
        self.clock = LifetimeClock(self.num_envs, rollout_steps, rollouts, device)
        self.rewards = np.zeros((self.num_envs, self.lifetime_steps), dtype=np.float32)
        self.successes = np.zeros((self.num_envs, self.lifetime_steps), dtype=bool)
        self._observation = torch.zeros(self.num_envs, *observation_space.shape, device=device)

    @property
    def simulators(self) -> list[Any] | None:
        """The lent simulators (None once closed), for tools that read their state.

        Raises:
            MetodsError: they step in worker processes (``task.workers``), out of reach here.
        """
        if not self._open:
            return None
        steppers = self._group.steppers
        if not isinstance(steppers, InProcessSteppers):
            raise MetodsError(
                f"the simulators step in {steppers.count} worker processes "
                "(task.workers), so their state cannot be read here: use task.workers=0"
            )
        stepper = steppers.stepper
        assert isinstance(stepper, MetaWorldStepper)
        return stepper.simulators(self._group.id)

    def _call(self, method: str, arguments: list[tuple[Any, ...]]) -> list[Any]:
        """``StepperGroup.call``, refused once the env is closed."""
        if not self._open:
            raise RuntimeError("this Meta-World env was closed; build a new one with make_env")
        return self._group.call(method, arguments)

    def _each_share(self, method: str) -> list[Any]:
        return self._call(method, [() for _ in self._group.shares])

    def _observe(self, observation: np.ndarray) -> torch.Tensor:
        """Return the simulators' observations ``(batch, dims)`` as the agent sees them: the
        ``columns`` kept, clipped to the space, then normalised (updating the statistics first in
        training)."""
        if self.columns is not None:
            observation = observation[:, self.columns]
        observation = np.clip(observation, self._low, self._high)
        if self.normalizer is not None:
            observation = self.normalizer.observe(observation, self.update_normalizer)
        return self._to_tensor(observation)

    def _reset_all(self) -> torch.Tensor:
        return self._observe(np.concatenate(self._each_share("reset")))

    def _to_tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array, dtype=np.float32), device=self.device)

    def reset(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """Set every simulator to its task, seed it from the task batch and reset it."""
        first = self._call(
            "start", [(self.tasks[share], self.seeds[share]) for share in self._group.shares]
        )
        self.clock.reset()
        self.rewards = np.full((self.num_envs, self.lifetime_steps), np.nan, dtype=np.float32)
        self.successes = np.zeros((self.num_envs, self.lifetime_steps), dtype=bool)
        self._observation = self._observe(np.concatenate(first))
        return self._observation, {}

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Step every simulator once; reset them all at a rollout boundary (see module doc)."""
        if self.clock.over:
            return self.clock.after_the_end(self._observation)
        actions = action.detach().to("cpu", torch.float32).numpy().reshape(self.num_envs, -1)
        actions = np.clip(actions, -1.0, 1.0)
        stepped = self._call("step", [(actions[share],) for share in self._group.shares])
        t = self.clock.steps
        observation, rewards, successes = (
            np.concatenate(part) for part in zip(*stepped, strict=True)
        )
        self.rewards[:, t] = rewards * self.reward_scale
        self.successes[:, t] = successes
        reward_now = self._to_tensor(self.rewards[:, t])
        boundary = self.clock.advance()
        if boundary and not self.clock.over:
            self._observation = self._reset_all()
        else:
            self._observation = self._observe(observation)
        return self._observation, reward_now, *self.clock.outcome(boundary)

    def lifetime_metrics(self) -> dict[str, torch.Tensor]:
        """Return return and success of the lifetimes so far, each ``(batch,)`` or per rollout.

        A rollout succeeds if Meta-World's ``info["success"]`` is set at any of its steps.
        ``success`` is the fraction of the lifetime's rollouts that succeeded;
        ``success/rollout_k`` (k = 0 .. rollouts - 1) and the curve ``success_by_rollout``
        ``(batch, rollouts)`` say it per rollout index (NaN for rollouts not started);
        ``return_by_rollout`` ``(batch, rollouts)`` is each rollout's return. For each name in
        ``class_names``, ``success/<name>`` is ``success`` for that class's lifetimes and NaN for
        the others, so its mean over a batch or a meta-test is that class's success rate.
        """
        shape = (self.num_envs, self.rollouts, self.rollout_steps)
        taken = np.nan_to_num(self.rewards, nan=0.0)
        started = np.arange(self.rollouts) * self.rollout_steps < self.clock.steps
        by_rollout: np.ndarray = np.asarray(self.successes.reshape(shape).any(axis=2), np.float32)
        by_rollout[:, ~started] = np.nan
        success = (
            np.nan_to_num(by_rollout[:, started]).mean(axis=1)
            if started.any()
            else np.zeros(self.num_envs, dtype=np.float32)
        )
        metrics = {
            "episode_reward": self._to_tensor(taken.sum(axis=1)),
            "return_by_rollout": self._to_tensor(taken.reshape(shape).sum(axis=2)),
            "success": self._to_tensor(success),
            "success_by_rollout": self._to_tensor(by_rollout),
        }
        for k in range(self.rollouts):
            metrics[f"success/rollout_{k}"] = self._to_tensor(by_rollout[:, k])
        names = np.asarray(self.env_names)
        for name in self.class_names:
            metrics[class_success_metric(name)] = self._to_tensor(
                np.where(names == name, success, np.nan)
            )
        return metrics

    def close(self) -> None:
        """Give the simulators back to the pool (for the next batch of tasks)."""
        if self._open:
            self._each_share("release")
            self._open = False
