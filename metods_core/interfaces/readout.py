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
        """Draw one action per task from ``distribution`` with ``generator`` (no global RNG)."""

    @abc.abstractmethod
    def mode(self, distribution: torch.distributions.Distribution) -> torch.Tensor:
        """Return the most likely action per task (greedy evaluation)."""
