"""Gaussian read-out: a diagonal Gaussian policy and a value from the dynamic layer's output.

For continuous (``Box``) action spaces. The policy's mean is a linear head; its log standard
deviation is either one learned vector shared by every state (``state_independent``) or a second
linear head (``learned``). Actions reach the Box in one of two ways:

- ``squash``: ``a = centre + half_width * tanh(u)`` with ``u ~ N(mean, std)``, a
  ``TransformedDistribution`` whose ``log_prob`` includes the tanh and affine log-determinants
  (Haarnoja et al. 2018, SAC, appendix C). The squashed Gaussian has no closed-form entropy:
  ``entropy()`` returns the entropy of the base Gaussian ``u`` instead (a common surrogate; it
  ignores the log-determinant term, which is what keeps an entropy bonus from pushing ``u``
  into tanh's flat tails).
- ``clip``: ``a = clip(u, low, high)``. ``log_prob`` is the Gaussian density at the clipped
  action, which is biased for samples beyond the bounds; prefer ``squash`` unless the bounds are
  far from where the policy acts.

``log_prob`` and ``entropy`` are summed over action dimensions (``Independent``), so both are
``(batch,)``. ``sample`` draws ``mean + std * randn(generator=...)`` and returns detached actions
(score-function gradients go through ``log_prob``, never through the action).
"""

from __future__ import annotations

from typing import Literal

import gymnasium as gym
import torch
from pydantic import Field, model_validator
from torch import nn
from torch.distributions import (
    AffineTransform,
    Distribution,
    Independent,
    Normal,
    TanhTransform,
    TransformedDistribution,
)

from metods_core import ComponentConfig, Readout


class _ClampedTanhTransform(TanhTransform):
    """``tanh`` whose inverse clamps to the open interval, so a saturated action (exactly +-1 in
    float32) still has a finite log-probability."""

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        bound = 1.0 - torch.finfo(y.dtype).eps
        return torch.atanh(y.clamp(-bound, bound))


class _SquashedGaussian(TransformedDistribution):
    """A tanh-squashed, rescaled diagonal Gaussian; ``entropy`` is the base Gaussian's."""

    def entropy(self) -> torch.Tensor:
        """Return the entropy of the Gaussian before squashing ``(batch,)`` (an estimate)."""
        return self.base_dist.entropy()


def _normal(distribution: Distribution) -> Normal:
    """Return the element-wise Normal under a distribution built by ``GaussianReadout``."""
    base = distribution
    while not isinstance(base, Normal):
        if not isinstance(base, Independent | TransformedDistribution):
            raise TypeError(f"not a distribution of GaussianReadout: {type(distribution)}")
        base = base.base_dist
    return base


class GaussianReadout(Readout):
    """Diagonal Gaussian policy (tanh-squashed or clipped to the Box) and a linear value head."""

    low: torch.Tensor
    high: torch.Tensor

    class Config(ComponentConfig):
        """Parameters of the Gaussian read-out."""

        hidden: int = Field(0, ge=0)
        """Width of a tanh hidden layer shared by every head (0: linear heads on y)."""
        log_std: Literal["state_independent", "learned"] = "state_independent"
        """state_independent: one learned log-std per action dimension; learned: a linear head."""
        initial_log_std: float = 0.0
        """Log standard deviation at initialisation (the vector, or the head's bias)."""
        min_log_std: float = -5.0
        """Lower clamp of the log standard deviation."""
        max_log_std: float = 2.0
        """Upper clamp of the log standard deviation."""
        actions: Literal["squash", "clip"] = "squash"
        """squash: tanh to the Box bounds (exact log-prob); clip: clip a Gaussian sample."""

        @model_validator(mode="after")
        def _check_log_std_range(self) -> GaussianReadout.Config:
            if not self.min_log_std < self.max_log_std:
                raise ValueError("min_log_std must be less than max_log_std")
            if not self.min_log_std <= self.initial_log_std <= self.max_log_std:
                raise ValueError("initial_log_std must lie in [min_log_std, max_log_std]")
            return self

    def __init__(self, config: Config, input_size: int, action_space: gym.Space) -> None:
        super().__init__()
        if not self.supports(action_space):
            raise ValueError(
                f"gaussian read-out needs a bounded 1-D Box action space, got {action_space}"
            )
        assert isinstance(action_space, gym.spaces.Box)
        self.config = config
        dims = int(action_space.shape[0])
        width = input_size
        self.trunk: nn.Module = nn.Identity()
        if config.hidden:
            self.trunk = nn.Sequential(nn.Linear(input_size, config.hidden), nn.Tanh())
            width = config.hidden
        self.mean = nn.Linear(width, dims)
        self.value = nn.Linear(width, 1)
        self.log_std_head: nn.Linear | None = None
        self.log_std_vector: nn.Parameter | None = None
        if config.log_std == "learned":
            self.log_std_head = nn.Linear(width, dims)
            nn.init.constant_(self.log_std_head.bias, config.initial_log_std)
        else:
            self.log_std_vector = nn.Parameter(torch.full((dims,), config.initial_log_std))
        low = torch.as_tensor(action_space.low, dtype=torch.float32).reshape(dims)
        high = torch.as_tensor(action_space.high, dtype=torch.float32).reshape(dims)
        # Buffers, so they follow .to(device/dtype); not persistent: the space defines them.
        self.register_buffer("low", low, persistent=False)
        self.register_buffer("high", high, persistent=False)

    @classmethod
    def supports(cls, action_space: gym.Space) -> bool:
        """Return whether ``action_space`` is a one-dimensional Box bounded on both sides."""
        return (
            isinstance(action_space, gym.spaces.Box)
            and len(action_space.shape) == 1
            and bool(action_space.is_bounded("both"))
        )

    def forward(self, y: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        """Map ``y`` ``(batch, input_size)`` to a distribution over actions ``(batch, dims)``
        (batch shape ``(batch,)``) and values ``(batch,)``."""
        features = self.trunk(y)
        mean = self.mean(features)
        if self.log_std_head is not None:
            log_std = self.log_std_head(features)
        else:
            assert self.log_std_vector is not None
            log_std = self.log_std_vector.expand_as(mean)
        log_std = log_std.clamp(self.config.min_log_std, self.config.max_log_std)
        # No argument validation: it costs a host-device sync per env step on a GPU; the
        # training loop checks gradients and the loss for non-finite values once per step.
        normal = Normal(mean, log_std.exp(), validate_args=False)
        distribution: Distribution
        if self.config.actions == "squash":
            centre = (self.high + self.low) / 2
            half_width = (self.high - self.low) / 2
            distribution = _SquashedGaussian(
                Independent(normal, 1, validate_args=False),
                [_ClampedTanhTransform(), AffineTransform(centre, half_width)],
                validate_args=False,
            )
        else:
            distribution = Independent(normal, 1, validate_args=False)
        return distribution, self.value(features).squeeze(-1)

    def _to_actions(self, u: torch.Tensor) -> torch.Tensor:
        """Map pre-squash values ``(batch, dims)`` to actions in the Box ``(batch, dims)``."""
        if self.config.actions == "squash":
            centre = (self.high + self.low) / 2
            half_width = (self.high - self.low) / 2
            u = centre + half_width * torch.tanh(u)
        # Clamp in both modes: rounding of centre + half_width * tanh may step past a bound.
        return torch.minimum(torch.maximum(u, self.low), self.high)

    def sample(self, distribution: Distribution, generator: torch.Generator) -> torch.Tensor:
        """Draw detached actions ``(batch, dims)`` with ``generator``."""
        loc = _normal(distribution).loc
        noise = torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
        return self.sample_from_noise(distribution, noise)

    def draw_noise(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | None = None,
    ) -> torch.Tensor:
        """Draw standard normal noise ``(*shape, dims)``."""
        dims = self.mean.out_features
        dtype = self.mean.weight.dtype
        return torch.randn((*shape, dims), generator=generator, device=device, dtype=dtype)

    def sample_from_noise(self, distribution: Distribution, noise: torch.Tensor) -> torch.Tensor:
        """Return the detached actions ``(batch, dims)`` of ``mean + std * noise``."""
        normal = _normal(distribution)
        return self._to_actions(normal.loc.detach() + normal.scale.detach() * noise)

    def mode(self, distribution: Distribution) -> torch.Tensor:
        """Return the mean action mapped to the Box ``(batch, dims)``."""
        return self._to_actions(_normal(distribution).loc.detach())
