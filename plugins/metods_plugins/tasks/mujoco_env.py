"""A batch of Gymnasium MuJoCo environments, one per task, stepped as lifetimes of episodes.

Wraps a Gymnasium vector env (one sub-environment per task, lent by a ``SimulatorPool`` and
given back by ``close()``) behind the torch ``BatchedEnv`` API: actions come in as torch
tensors and go to MuJoCo as numpy arrays; observations and rewards come back as float32
tensors on the tasks' device. The reward is
recomputed from the task by ``reward_fn`` (from the step's info), not taken from Gymnasium.

A lifetime is ``episodes_per_lifetime`` episodes of ``episode_steps`` steps. At the end of an
episode ``info["episode_boundary"]`` is set and, unless the lifetime is over, every simulator is
reset and the observation returned is the first one of the next episode: the agent keeps its
synapses across the boundary. The last step of the lifetime reports ``truncated``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metods_core import BatchedEnv
from metods_plugins.tasks.lifetime_clock import LifetimeClock
from metods_plugins.tasks.mujoco_normalizer import RunningObservationNormalizer
from metods_plugins.tasks.simulator_pool import PooledVectorEnv, SimulatorPool

RewardFn = Callable[[dict[str, Any]], np.ndarray]
"""Map a vector step's info (arrays over tasks) to the task rewards ``(batch,)``."""


class MuJoCoBatchedEnv(BatchedEnv):
    """Gymnasium MuJoCo sub-environments, one per task, as a torch ``BatchedEnv``."""

    def __init__(
        self,
        pool: SimulatorPool,
        num_envs: int,
        reset_seeds: list[int],
        reward_fn: RewardFn,
        episode_steps: int,
        episodes_per_lifetime: int,
        impair_actuator: int | None,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Box,
        device: torch.device,
        normalizer: RunningObservationNormalizer | None = None,
        update_normalizer: bool = False,
    ) -> None:
        self.pool = pool
        self.vector_env: PooledVectorEnv | None = pool.acquire(num_envs)
        self.num_envs = num_envs
        self.reset_seeds = reset_seeds
        self.reward_fn = reward_fn
        self.episode_steps = episode_steps
        self.lifetime_steps = episode_steps * episodes_per_lifetime
        self.impair_actuator = impair_actuator
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.device = device
        self.normalizer = normalizer
        self.update_normalizer = update_normalizer
        self._low = np.asarray(action_space.low, dtype=np.float32)
        self._high = np.asarray(action_space.high, dtype=np.float32)
        self.clock = LifetimeClock(num_envs, episode_steps, episodes_per_lifetime, device)
        self.rewards = torch.zeros(num_envs, self.lifetime_steps, device=device)
        self._observation = torch.zeros(num_envs, *observation_space.shape, device=device)

    def _to_tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array, dtype=np.float32), device=self.device)

    def _observe(self, observation: np.ndarray) -> torch.Tensor:
        """Return the agent's observation: normalised (training lifetimes update the stats)."""
        if self.normalizer is not None:
            observation = self.normalizer.observe(observation, self.update_normalizer)
        return self._to_tensor(observation)

    @property
    def simulators(self) -> PooledVectorEnv:
        """The lent vector env (an error once the env is closed)."""
        if self.vector_env is None:
            raise RuntimeError("this MuJoCo env was closed; build a new one with make_env")
        return self.vector_env

    def reset(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """Start every lifetime from the tasks' own reset seeds."""
        observation, _ = self.simulators.reset(seed=list[int | None](self.reset_seeds))
        self.clock.reset()
        self.rewards = torch.full(
            (self.num_envs, self.lifetime_steps), float("nan"), device=self.device
        )
        self._observation = self._observe(observation)
        return self._observation, {}

    def to_numpy_actions(self, action: torch.Tensor) -> np.ndarray:
        """Return ``action`` ``(batch, dims)`` as numpy, clipped to the Box, impairment applied.

        The impaired actuator's torque is forced to exactly 0 (a frozen joint motor).
        """
        array = action.detach().to("cpu", torch.float32).numpy().reshape(self.num_envs, -1)
        array = np.clip(array, self._low, self._high)
        if self.impair_actuator is not None:
            array[:, self.impair_actuator] = 0.0
        return array

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Step every simulator once; reset them all at an episode boundary (see module doc)."""
        if self.clock.over:
            return self.clock.after_the_end(self._observation)
        actions = self.to_numpy_actions(action)
        observation, _, terminated, _, info = self.simulators.step(actions)
        # The sub-environments are built never to terminate (Ant: terminate_when_unhealthy=False)
        # so that every lifetime has the same length and all boundaries fall on the same step.
        assert not np.any(terminated), "a MuJoCo sub-environment terminated unexpectedly"
        reward = self._to_tensor(self.reward_fn(info))
        self.rewards[:, self.clock.steps] = reward
        boundary = self.clock.advance()
        if boundary and not self.clock.over:
            observation, _ = self.simulators.reset()  # each sub-env continues its own RNG
        self._observation = self._observe(observation)
        return self._observation, reward, *self.clock.outcome(boundary)

    def lifetime_metrics(self) -> dict[str, torch.Tensor]:
        """Return the lifetime's return, the per-step reward curve, and per-episode returns.

        ``reward_curve`` is ``(batch, lifetime_steps)`` (NaN for steps not taken yet);
        ``return_by_episode`` ``(batch, episodes_per_lifetime)`` is set for lifetimes of
        several episodes.
        """
        taken = torch.nan_to_num(self.rewards, nan=0.0)
        metrics = {"episode_reward": taken.sum(dim=1), "reward_curve": self.rewards.clone()}
        episodes = self.lifetime_steps // self.episode_steps
        if episodes > 1:
            metrics["return_by_episode"] = taken.reshape(self.num_envs, episodes, -1).sum(dim=2)
        return metrics

    def close(self) -> None:
        """Give the simulators back to the pool (for the next batch of tasks)."""
        if self.vector_env is not None:
            self.pool.release(self.vector_env)
            self.vector_env = None
