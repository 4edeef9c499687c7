"""The read-out g: from the dynamic layer's output to an action distribution and a value."""

from __future__ import annotations

import abc
from typing import ClassVar

import gymnasium as gym
import torch
from torch import nn

from metods_core.interfaces.config import ComponentConfig


class Readout(nn.Module, abc.ABC):
    """Policy and critic heads. Built as ``Readout(config, input_size, action_space)``."""

    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    @classmethod
    def supports(cls, action_space: gym.Space) -> bool:
        """Return whether this read-out can act in ``action_space``."""
        return True

    @abc.abstractmethod
    def forward(self, y: torch.Tensor) -> tuple[torch.distributions.Distribution, torch.Tensor]:
        """Map ``y`` of shape ``(batch, input_size)`` to a distribution and values ``(batch,)``."""

    @abc.abstractmethod
    def sample(
        self, distribution: torch.distributions.Distribution, generator: torch.Generator
    ) -> torch.Tensor:
        """Draw one sample per task from ``distribution`` with ``generator`` (no global RNG):
        what ``distribution.log_prob`` scores; the environment takes ``env_action`` of it."""

    @abc.abstractmethod
    def mode(self, distribution: torch.distributions.Distribution) -> torch.Tensor:
        """Return the most likely sample per task (greedy evaluation), as ``sample`` does."""

    def env_action(self, sample: torch.Tensor) -> torch.Tensor:
        """Return the action the environment takes for ``sample`` (one of ``sample``,
        ``sample_from_noise`` or ``mode``), shape ``(batch, ...)``; the identity by default.

        Rollouts record and replay the sample, not the action. A read-out whose map to the
        action space loses information (a tanh squash saturates in float32, a clip) samples
        the value before that map and applies the map here, so a replay (PPO's ratio) scores
        exactly what was drawn.
        """
        return sample

    def draw_noise(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | None = None,
    ) -> torch.Tensor | None:
        """Draw the randomness of ``shape`` actions (``(steps, batch)``) at once, or None.

        Optional: a read-out that implements it and ``sample_from_noise`` lets the rollout
        draw a whole lifetime's action noise in one call and sample inside the agent's
        (compiled) step. The default, None, makes the rollout call ``sample`` at each step.
        """
        return None

    def sample_from_noise(
        self, distribution: torch.distributions.Distribution, noise: torch.Tensor
    ) -> torch.Tensor:
        """Return one detached sample per task (as ``sample`` does) from ``distribution`` and
        ``noise`` (one step of ``draw_noise``'s output); needed only where ``draw_noise``
        returns noise."""
        raise NotImplementedError(f"{type(self).__name__} draws no noise ahead of sampling")
