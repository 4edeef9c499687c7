"""Small, self-contained components, one per interface, for the core's own tests.

Like Lightning's ``BoringModel``: each fake is the least code that honours its interface, so a
test of the core (the agent, the rollout, the training loop, a conformance suite) needs no plugin.
Every fake passes its own conformance suite. ``create_tiny_agent`` assembles them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field
from torch import nn

from metods_core.agent import Agent, AgentConfig
from metods_core.interfaces import (
    BatchedEnv,
    ComponentConfig,
    MetaOptimizer,
    OuterBatch,
    PlasticityRule,
    Readout,
    Split,
    TaskBatch,
    TaskSampler,
)


class FakeState(NamedTuple):
    """State of ``FakeRule``: ``weights`` ``(batch, n, n)`` and ``trace`` ``(batch, n)``."""

    weights: torch.Tensor
    trace: torch.Tensor


class FakeRule(PlasticityRule):
    """A decaying Hebbian layer: y = tanh(U x + W x + trace); W += rate * y x^T."""

    class Config(ComponentConfig):
        """Parameters of the fake rule."""

        decay: float = Field(default=0.9, ge=0, le=1)
        """Initial decay of the synapses and the trace per step."""
        rate: float = 0.1
        """Initial Hebbian learning rate."""

    def __init__(self, config: Config, input_size: int) -> None:
        super().__init__()
        self.config = config
        self.output_size = input_size
        self.input_weights = nn.Linear(input_size, input_size)
        self.decay = nn.Parameter(torch.tensor(config.decay))
        self.rate = nn.Parameter(torch.tensor(config.rate))
        self.initial_trace = nn.Parameter(torch.zeros(input_size))

    def init_state(self, batch_size: int) -> FakeState:
        """Return zero synapses and the learned initial trace for ``batch_size`` tasks."""
        n = self.output_size
        weights = self.initial_trace.new_zeros(batch_size, n, n)
        return FakeState(weights, self.initial_trace.expand(batch_size, n))

    def step(self, x: torch.Tensor, state: FakeState) -> tuple[torch.Tensor, FakeState]:
        """Read ``x`` ``(batch, n)`` through U and W, then write the Hebbian update."""
        read = torch.bmm(state.weights, x.unsqueeze(-1)).squeeze(-1)
        y = torch.tanh(self.input_weights(x) + read + state.trace)
        hebb = y.unsqueeze(-1) * x.unsqueeze(-2)
        weights = self.decay * state.weights + self.rate * hebb
        return y, FakeState(weights, self.decay * state.trace + (1 - self.decay) * y)


class FakeReadout(Readout):
    """Linear heads: Categorical for ``Discrete``, clipped diagonal Gaussian for ``Box``."""

    low: torch.Tensor
    high: torch.Tensor

    class Config(ComponentConfig):
        """Parameters of the fake read-out."""

        log_std: float = -0.5
        """Initial log standard deviation of the Gaussian (Box actions only)."""

    def __init__(self, config: Config, input_size: int, action_space: gym.Space) -> None:
        super().__init__()
        if not self.supports(action_space):
            raise ValueError(f"FakeReadout supports Discrete and Box spaces, got {action_space}")
        self.config = config
        self.action_space = action_space
        self.value = nn.Linear(input_size, 1)
        self.event_shape: tuple[int, ...] = tuple(action_space.shape or ())
        if isinstance(action_space, gym.spaces.Discrete):
            self.policy = nn.Linear(input_size, int(action_space.n))
        else:
            assert isinstance(action_space, gym.spaces.Box)
            self.policy = nn.Linear(input_size, int(np.prod(self.event_shape)))
            self.log_std = nn.Parameter(torch.full(self.event_shape, config.log_std))
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32))

    @classmethod
    def supports(cls, action_space: gym.Space) -> bool:
        """Return whether ``action_space`` is ``Discrete`` or a bounded ``Box``."""
        if isinstance(action_space, gym.spaces.Box):
            return bool(action_space.is_bounded("both"))
        return isinstance(action_space, gym.spaces.Discrete)

    def forward(self, y: torch.Tensor) -> tuple[torch.distributions.Distribution, torch.Tensor]:
        """Map ``y`` ``(batch, input_size)`` to a distribution and values ``(batch,)``."""
        value = self.value(y).squeeze(-1)
        if isinstance(self.action_space, gym.spaces.Discrete):
            return torch.distributions.Categorical(logits=self.policy(y)), value
        mean = self.policy(y).reshape(y.shape[0], *self.event_shape)
        normal = torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))
        return torch.distributions.Independent(normal, len(self.event_shape)), value

    def sample(
        self, distribution: torch.distributions.Distribution, generator: torch.Generator
    ) -> torch.Tensor:
        """Draw one action per task with ``generator``, clipped to a Box's bounds."""
        if isinstance(distribution, torch.distributions.Categorical):
            logits = distribution.logits
            uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
            gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0)))
            return torch.argmax(logits + gumbel, dim=-1)
        mean, std = distribution.mean, distribution.stddev
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return self._clip(mean + std * noise).detach()

    def mode(self, distribution: torch.distributions.Distribution) -> torch.Tensor:
        """Return the most likely action per task (the clipped mean for a Box)."""
        if isinstance(distribution, torch.distributions.Categorical):
            return torch.argmax(distribution.logits, dim=-1)
        return self._clip(distribution.mean).detach()

    def _clip(self, action: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(action, self.low), self.high)


@dataclass
class FakeTaskBatch(TaskBatch):
    """Fake tasks: a ``cue`` ``(batch, cue_size)`` shown every step and a ``target`` action."""

    cue: torch.Tensor
    target: torch.Tensor


class FakeTasks(TaskSampler):
    """Find the target: reward 1 for the target arm (Discrete), or -|a - target|^2 (Box).

    Train cues lie in [-1, 0), test cues in [0, 1), so the splits never share a task. With
    ``validation``, train cues lie in [-1, -0.5) and validation cues in [-0.5, 0).
    """

    class Config(ComponentConfig):
        """Parameters of the fake task family."""

        steps: int = Field(default=5, ge=1)
        """Steps per lifetime; the env truncates after them."""
        cue_size: int = Field(default=2, ge=1)
        """Length of the cue observed at every step."""
        arms: int = Field(default=3, ge=2)
        """Number of discrete actions (Discrete action space)."""
        continuous: bool = False
        """Use a Box(-1, 1, (2,)) action space instead of Discrete(arms)."""
        validation: bool = False
        """Offer a validation split (``has_validation_split``), taken from the train cues."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (config.cue_size,), np.float32)
        self.action_space: gym.Space
        if config.continuous:
            self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        else:
            self.action_space = gym.spaces.Discrete(config.arms)
        self.lifetime_steps = config.steps

    def sample(self, n: int, split: Split, generator: torch.Generator) -> FakeTaskBatch:
        """Draw ``n`` tasks of ``split`` with ``generator``."""
        if split == "validation" and not self.config.validation:
            raise ValueError("FakeTasks has no validation split: set validation=True")
        train_width = 0.5 if self.config.validation else 1.0
        ranges = {"train": (-1.0, train_width), "validation": (-0.5, 0.5), "test": (0.0, 1.0)}
        low, width = ranges[split]
        cue = low + width * torch.rand(n, self.config.cue_size, generator=generator)
        target: torch.Tensor
        if self.config.continuous:
            target = torch.rand(n, 2, generator=generator) * 2 - 1
        else:
            target = torch.randint(0, self.config.arms, (n,), generator=generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return FakeTaskBatch(size=n, split=split, seed=seed, cue=cue, target=target)

    def make_env(self, tasks: TaskBatch) -> FakeEnv:
        """Build the batched environment of ``tasks``."""
        assert isinstance(tasks, FakeTaskBatch)
        return FakeEnv(self, tasks)

    def has_validation_split(self) -> bool:
        """True with ``validation``."""
        return self.config.validation


class FakeEnv(BatchedEnv):
    """The batched environment of ``FakeTasks``: one lifetime of ``steps`` steps per task."""

    def __init__(self, sampler: FakeTasks, tasks: FakeTaskBatch) -> None:
        self.tasks = tasks
        self.continuous = sampler.config.continuous
        self.num_envs = tasks.size
        self.lifetime_steps = sampler.lifetime_steps
        self.single_observation_space = sampler.observation_space
        self.single_action_space = sampler.action_space
        self.steps = 0
        self.total_reward = torch.zeros(tasks.size)

    def reset(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """Start every lifetime and show the cues."""
        self.steps = 0
        self.total_reward = torch.zeros(self.num_envs, device=self.tasks.cue.device)
        return self.tasks.cue.clone(), {}

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Reward the action; truncate every lifetime after ``steps`` steps."""
        if self.continuous:
            reward = -(action.float() - self.tasks.target).pow(2).sum(-1)
        else:
            reward = (action == self.tasks.target).float()
        running = self.steps < self.lifetime_steps
        reward = reward * running
        self.total_reward = self.total_reward + reward
        self.steps += 1
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=reward.device)
        truncated = torch.full_like(terminated, self.steps == self.lifetime_steps)
        return self.tasks.cue.clone(), reward, terminated, truncated, {}

    def lifetime_metrics(self) -> dict[str, torch.Tensor]:
        """Return the reward of each lifetime so far."""
        return {"episode_reward": self.total_reward}


class FakeMetaOptimizer(MetaOptimizer):
    """REINFORCE with a learned baseline, one SGD step per outer step."""

    class Config(ComponentConfig):
        """Parameters of the fake meta-optimizer."""

        lr: float = Field(default=0.05, gt=0)
        """SGD learning rate."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def configure_optimizer(self, agent: Agent) -> torch.optim.Optimizer:
        """Return SGD over the agent's trainable parameters."""
        parameters = [p for p in agent.parameters() if p.requires_grad]
        return torch.optim.SGD(parameters, lr=self.config.lr)

    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        """Run one lifetime per task, take one SGD step, return the loss and the reward."""
        lifetimes = batch.run_lifetimes(agent)
        mask = lifetimes.alive.float()
        returns = (lifetimes.rewards * mask).flip(0).cumsum(0).flip(0)
        advantages = (returns - lifetimes.values).detach()
        policy_loss = -(lifetimes.log_probs * advantages * mask).mean()
        value_loss = ((returns - lifetimes.values).pow(2) * mask).mean()
        loss = policy_loss + 0.5 * value_loss
        batch.optimizer.zero_grad(set_to_none=True)
        batch.backward(loss)
        batch.optimizer.step()
        reward = lifetimes.metrics["episode_reward"].mean()
        return {"loss": loss.detach(), "episode_reward": reward.detach()}


def create_tiny_agent(
    sampler: TaskSampler | None = None, hidden: int = 6, seed: int = 0
) -> tuple[Agent, TaskSampler]:
    """Build a small agent of ``FakeRule`` and ``FakeReadout`` for ``sampler`` (a ``FakeTasks``).

    Args:
        sampler: the task family the agent acts in; default ``FakeTasks`` with its defaults.
        hidden: width N of the embedding and the rule.
        seed: initialises the modules' parameters (the caller's global RNG is left untouched).

    Returns:
        The agent and its task sampler.
    """
    sampler = sampler if sampler is not None else FakeTasks(FakeTasks.Config())
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(seed)
        rule = FakeRule(FakeRule.Config(), hidden)
        readout = FakeReadout(FakeReadout.Config(), rule.output_size, sampler.action_space)
        agent = Agent(
            AgentConfig(hidden=hidden),
            sampler.observation_space,
            sampler.action_space,
            rule,
            readout,
        )
    return agent, sampler
