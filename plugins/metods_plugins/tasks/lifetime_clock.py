"""The step count of a batch of lifetimes made of equal episodes, stepped in lockstep.

The simulator-backed task families (MuJoCo, Meta-World) run every task of a batch for the same
number of steps: a lifetime is ``episodes`` episodes of ``episode_steps`` steps, so episode
boundaries fall on the same step for every task. ``LifetimeClock`` owns that bookkeeping: where
an episode ends, when the lifetime is over, and the ``terminated`` / ``truncated`` /
``info["episode_boundary"]`` a ``BatchedEnv.step`` returns.
"""

from __future__ import annotations

from typing import Any

import torch


class LifetimeClock:
    """Steps taken in lifetimes of ``episodes`` episodes of ``episode_steps`` steps each."""

    def __init__(
        self, num_envs: int, episode_steps: int, episodes: int, device: torch.device
    ) -> None:
        self.num_envs = num_envs
        self.episode_steps = episode_steps
        self.lifetime_steps = episode_steps * episodes
        self.device = device
        self.steps = 0
        """Steps taken since the last ``reset`` (the index of the next step)."""

    def reset(self) -> None:
        """Start new lifetimes."""
        self.steps = 0

    @property
    def over(self) -> bool:
        """Whether the lifetimes have taken all their steps."""
        return self.steps >= self.lifetime_steps

    def advance(self) -> bool:
        """Count one step; return whether it was the last of an episode."""
        self.steps += 1
        return self.steps % self.episode_steps == 0

    def outcome(self, boundary: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Return ``terminated``, ``truncated`` (bool ``(num_envs,)``) and the info of the step
        just counted: nothing terminates; the lifetime's last step is truncated."""
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        truncated = torch.full_like(terminated, self.steps == self.lifetime_steps)
        return terminated, truncated, {"episode_boundary": torch.full_like(terminated, boundary)}

    def after_the_end(
        self, observation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Return a step's result once the lifetime is over: nothing moves, no reward,
        ``truncated`` (the rollout masks these steps out)."""
        flags = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        zeros = torch.zeros(self.num_envs, device=self.device)
        return observation, zeros, flags, torch.ones_like(flags), {"episode_boundary": flags}
