"""Categorical read-out: action logits and a value from the dynamic layer's output."""

from __future__ import annotations

import gymnasium as gym
import torch
from pydantic import Field
from torch import nn

from metods_core import ComponentConfig, Readout


class CategoricalReadout(Readout):
    """Linear policy logits and linear value head, for discrete action spaces."""

    class Config(ComponentConfig):
        """Parameters of the categorical read-out."""

        hidden: int = Field(0, ge=0)
        """Width of a tanh hidden layer shared by both heads (0: linear heads on y)."""

    def __init__(self, config: Config, input_size: int, action_space: gym.Space) -> None:
        super().__init__()
        if not self.supports(action_space):
            raise ValueError(
                f"categorical read-out needs a Discrete action space, got {action_space}"
            )
        assert isinstance(action_space, gym.spaces.Discrete)
        self.config = config
        width = input_size
        self.trunk: nn.Module = nn.Identity()
        if config.hidden:
            self.trunk = nn.Sequential(nn.Linear(input_size, config.hidden), nn.Tanh())
            width = config.hidden
        self.policy = nn.Linear(width, int(action_space.n))
        self.value = nn.Linear(width, 1)

    @classmethod
    def supports(cls, action_space: gym.Space) -> bool:
        """Return whether ``action_space`` is discrete."""
        return isinstance(action_space, gym.spaces.Discrete)

    def forward(self, y: torch.Tensor) -> tuple[torch.distributions.Categorical, torch.Tensor]:
        """Map ``y`` ``(batch, input_size)`` to a Categorical and values ``(batch,)``."""
        features = self.trunk(y)
        logits = self.policy(features)
        # No argument validation: it costs a host-device sync per env step on a GPU; the
        # training loop checks gradients and the loss for non-finite values once per step.
        distribution = torch.distributions.Categorical(logits=logits, validate_args=False)
        return distribution, self.value(features).squeeze(-1)

    def sample(
        self, distribution: torch.distributions.Distribution, generator: torch.Generator
    ) -> torch.Tensor:
        """Draw actions ``(batch,)`` by the Gumbel-max trick with ``generator``."""
        assert isinstance(distribution, torch.distributions.Categorical)
        logits = distribution.logits
        noise = self.draw_noise(logits.shape[:-1], generator, logits.device)
        return self.sample_from_noise(distribution, noise)

    def draw_noise(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | None = None,
    ) -> torch.Tensor:
        """Draw uniform noise ``(*shape, actions)`` for the Gumbel-max trick."""
        return torch.rand((*shape, self.policy.out_features), generator=generator, device=device)

    def sample_from_noise(
        self, distribution: torch.distributions.Distribution, noise: torch.Tensor
    ) -> torch.Tensor:
        """Return ``argmax(logits + Gumbel(noise))`` ``(batch,)``: a draw from the policy."""
        assert isinstance(distribution, torch.distributions.Categorical)
        gumbel = -torch.log(-torch.log(noise.clamp(1e-20, 1.0)))
        return torch.argmax(distribution.logits + gumbel, dim=-1)

    def mode(self, distribution: torch.distributions.Distribution) -> torch.Tensor:
        """Return the most likely action per task ``(batch,)``."""
        assert isinstance(distribution, torch.distributions.Categorical)
        return torch.argmax(distribution.logits, dim=-1)
