"""Tiny components loaded through the ``module:Class`` escape hatch by the core's own tests.

They stand in for plugins that are not written yet, and give component switching a second
plugin of each kind. They are never run, only validated.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from pydantic import Field

from metods_core.interfaces import (
    BatchedEnv,
    ComponentConfig,
    MetaOptimizer,
    PlasticityRule,
    Readout,
    TaskBatch,
    TaskSampler,
)


class TinyRule(PlasticityRule):
    """A leaky trace: the smallest plastic memory."""

    class Config(ComponentConfig):
        recursion_steps: int = Field(1, ge=1)
        """Shares a field with the MetODS rule, so that switching keeps it."""
        decay: float = Field(0.9, ge=0, le=1)
        """How much of the trace survives a step."""

    def __init__(self, config: Config, input_size: int) -> None:
        super().__init__()
        self.config, self.output_size = config, input_size

    def init_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.output_size)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.config.decay * state + x
        return state, state


class TinyReadout(Readout):
    """A read-out with no parameters of its own."""

    class Config(ComponentConfig):
        pass

    def forward(self, y: torch.Tensor):  # type: ignore[override]
        raise NotImplementedError

    def sample(self, distribution, generator):  # type: ignore[override]
        raise NotImplementedError

    def mode(self, distribution):  # type: ignore[override]
        raise NotImplementedError


class TinyTasks(TaskSampler):
    """Two-armed tasks."""

    class Config(ComponentConfig):
        trials: int = Field(2, gt=0)
        """Trials per lifetime."""
        arms: int = Field(2, ge=2)
        """Actions to choose from."""

    observation_space = gym.spaces.Box(0, 1, (1,))
    action_space = gym.spaces.Discrete(2)

    def sample(self, n, split, generator) -> TaskBatch:  # type: ignore[override]
        return TaskBatch(size=n, split=split, seed=0)

    def make_env(self, tasks: TaskBatch) -> BatchedEnv:
        raise NotImplementedError


class OtherTasks(TinyTasks):
    """Tasks with noise: shares ``trials`` with TinyTasks but not ``arms``."""

    class Config(ComponentConfig):
        trials: int = Field(3, gt=0)
        """Trials per lifetime."""
        noise: float = Field(0.0, ge=0)
        """Observation noise."""


class NeedyTasks(TinyTasks):
    """Tasks with a parameter that has no default."""

    class Config(ComponentConfig):
        size: int = Field(gt=0)
        """Side of the grid (required)."""


class TinyOptimizer(MetaOptimizer):
    """Does nothing, with typed hyper-parameters."""

    class Config(ComponentConfig):
        lr: float = Field(1e-3, gt=0)
        """Learning rate."""
        gamma: float = Field(0.9, ge=0, le=1)
        """Discount."""

    def configure_optimizer(self, agent):  # type: ignore[override]
        raise NotImplementedError

    def training_step(self, agent, batch):  # type: ignore[override]
        raise NotImplementedError


class NotAComponent:
    """Not a subclass of any interface."""

    Config = ComponentConfig


class RuleWithoutConfig(PlasticityRule):
    """Subclasses the interface but declares its Config as a plain dict."""

    Config = dict  # type: ignore[assignment]

    def init_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, 1)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, state


class NaNAfterTwoSteps(MetaOptimizer):
    """Plain SGD on the sum of the values, whose loss turns NaN at the third call."""

    class Config(ComponentConfig):
        """No parameters."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.calls = 0

    def configure_optimizer(self, agent):
        return torch.optim.SGD(agent.parameters(), lr=1e-3)

    def training_step(self, agent, batch):
        self.calls += 1
        lifetimes = batch.run_lifetimes(agent)
        loss = lifetimes.values.mean()
        if self.calls > 2:
            loss = loss * float("nan")
        batch.optimizer.zero_grad()
        batch.backward(loss)
        batch.optimizer.step()
        return {"loss": loss.detach()}


class ThreeStepsPerOuterStep(MetaOptimizer):
    """REINFORCE on one lifetime per task, then three SGD steps on it (like PPO's epochs)."""

    class Config(ComponentConfig):
        """Parameters of the probe."""

        lr: float = Field(1e-3, gt=0)
        """SGD learning rate."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def configure_optimizer(self, agent):
        return torch.optim.SGD(agent.parameters(), lr=self.config.lr)

    def training_step(self, agent, batch):
        from metods_core.rollout import replay_lifetimes

        lifetimes = batch.run_lifetimes(agent, record=True)
        returns = lifetimes.rewards.flip(0).cumsum(0).flip(0)
        for _ in range(3):
            replay = replay_lifetimes(agent, lifetimes.record)
            loss = -(replay.log_probs * (returns - replay.values.detach())).mean()
            batch.optimizer.zero_grad()
            batch.backward(loss)
            batch.optimizer.step()
        return {"loss": loss.detach()}
