"""Two-armed Bernoulli bandits, batched over tasks in torch.

A task is a pair of arm probabilities ``(p_0, p_1)``. With ``dependent`` arms (Wang et al.
2016's "easy" bandits) ``p_1 = 1 - p_0``; otherwise both are drawn independently. A lifetime is
``episodes_per_lifetime`` episodes of ``pulls`` pulls of the same task: the agent must find the
better arm in the first episode and keep exploiting it in the next ones, where its plastic
state carries over (``info["episode_boundary"]`` marks each episode's last pull).

Splits: ``p_0`` lies in one of ``bins`` equal bins of [0, 1]; every ``test_every``-th bin is
the test split's, the others the training split's, so the two never share a task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, model_validator

from metods_core import BatchedEnv, ComponentConfig, Split, TaskBatch, TaskSampler


@dataclass
class BanditTaskBatch(TaskBatch):
    """Bandit tasks: ``probabilities`` ``(batch, 2)``, each arm's chance of paying 1."""

    probabilities: torch.Tensor


class TwoArmedBandit(TaskSampler):
    """Two-armed Bernoulli bandits (Wang et al. 2016): find the better arm, then exploit it."""

    class Config(ComponentConfig):
        """Parameters of the two-armed bandit family."""

        pulls: int = Field(20, ge=1)
        """Pulls per episode."""
        episodes_per_lifetime: int = Field(1, ge=1)
        """Episodes of the same task per lifetime; the agent's plastic state carries over."""
        dependent: bool = True
        """Arms with p_1 = 1 - p_0 (Wang et al.'s easy bandits); False: independent arms."""
        bins: int = Field(10, ge=2)
        """Equal bins of [0, 1] that p_0 is drawn from, shared out between the splits."""
        test_every: int = Field(5, ge=2)
        """Every test_every-th bin (0, test_every, ...) belongs to the test split."""

        @model_validator(mode="after")
        def _check_splits(self) -> TwoArmedBandit.Config:
            if self.test_every > self.bins:
                raise ValueError("test_every must be at most bins, or the test split is empty")
            return self

    def __init__(self, config: Config) -> None:
        self.config = config
        # A bandit shows nothing: the agent learns from its previous action and reward, which
        # its encoder already receives. One constant float32 feature keeps the Box non-empty.
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.episodes_per_lifetime = config.episodes_per_lifetime
        self.lifetime_steps = config.pulls * config.episodes_per_lifetime
        every = torch.arange(config.bins)
        self._bins = {"test": every[every % config.test_every == 0]}
        self._bins["train"] = every[every % config.test_every != 0]

    def sample(self, n: int, split: Split, generator: torch.Generator) -> BanditTaskBatch:
        """Draw ``n`` tasks of ``split`` with ``generator`` (never the global RNG)."""
        bins = self._bins[split]
        chosen = bins[torch.randint(len(bins), (n,), generator=generator)]
        p0 = (chosen + torch.rand(n, generator=generator)) / self.config.bins
        other = 1 - p0 if self.config.dependent else torch.rand(n, generator=generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))  # the env's own draws
        return BanditTaskBatch(
            size=n, split=split, seed=seed, probabilities=torch.stack([p0, other], dim=1)
        )

    def make_env(self, tasks: TaskBatch) -> BanditEnv:
        """Build the batched bandits of ``tasks`` on the device of their tensors."""
        assert isinstance(tasks, BanditTaskBatch)
        return BanditEnv(self.config, tasks, self.observation_space, self.action_space)

    def main_metric(self) -> str:
        """Rank agents by the reward of a whole lifetime."""
        return "episode_reward"


class BanditEnv(BatchedEnv):
    """A batch of bandits pulled together; every lifetime lasts ``lifetime_steps`` pulls."""

    def __init__(
        self,
        config: TwoArmedBandit.Config,
        tasks: BanditTaskBatch,
        observation_space: gym.Space,
        action_space: gym.Space,
    ) -> None:
        self.config = config
        self.probabilities = tasks.probabilities
        self.device = tasks.probabilities.device
        self.seed = tasks.seed
        self.copies = tasks.copies
        self.num_envs = tasks.size
        self.lifetime_steps = config.pulls * config.episodes_per_lifetime
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.generator = torch.Generator(device=self.device)

    def reset(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """Start every lifetime; re-seed the payouts from the task batch's ``seed``."""
        self.generator.manual_seed(self.seed)  # same tasks + same actions = same lifetime
        n, episodes = self.num_envs, self.config.episodes_per_lifetime
        self.steps = 0
        self.total_reward = torch.zeros(n, device=self.device)
        self.regret = torch.zeros(n, device=self.device)
        self.best_pulls = torch.zeros(n, episodes, device=self.device)
        return self._observation(), {}

    def _observation(self) -> torch.Tensor:
        return torch.ones(self.num_envs, 1, device=self.device)

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Pull arm ``action`` ``(batch,)``; pay 1 with that arm's probability."""
        chance = self.probabilities.gather(1, action.long().view(-1, 1)).squeeze(1)
        # Drawn for the base tasks and tiled over tasks.copies: copies of a task share payouts.
        base = self.num_envs // self.copies
        draw = torch.rand(base, generator=self.generator, device=self.device).repeat(self.copies)
        live = self.steps < self.lifetime_steps  # a Python bool: no host sync
        reward = (draw < chance).float() * live
        best = self.probabilities.max(dim=1).values
        episode = min(self.steps // self.config.pulls, self.config.episodes_per_lifetime - 1)
        self.best_pulls[:, episode] += (chance == best).float() * live
        self.total_reward += reward
        self.regret += (best - chance) * live
        self.steps += 1
        boundary = self.steps % self.config.pulls == 0 and live
        over = torch.full((self.num_envs,), self.steps >= self.lifetime_steps, device=self.device)
        info = {"episode_boundary": torch.full_like(over, boundary)}
        return self._observation(), reward, torch.zeros_like(over), over, info

    def lifetime_metrics(self) -> dict[str, torch.Tensor]:
        """``episode_reward`` and ``regret`` ``(batch,)``; ``best_arm_rate`` ``(batch,
        episodes)``: the share of each episode's pulls that went to the better arm."""
        return {
            "episode_reward": self.total_reward.clone(),
            "regret": self.regret.clone(),
            "best_arm_rate": self.best_pulls / self.config.pulls,
        }
