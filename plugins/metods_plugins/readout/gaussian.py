"""Gaussian read-out: a diagonal Gaussian policy and a value from the dynamic layer's output.

For continuous (``Box``) action spaces. The policy's mean is a linear head; its log standard
deviation is either one learned vector shared by every state (``state_independent``) or a second
linear head (``learned``). The read-out samples ``u ~ N(mean, std)``; ``env_action`` maps ``u``
to the Box in one of two ways:

- ``squash``: ``a = centre + half_width * tanh(u)``. ``log_prob(u)`` is the density of ``a``:
  the Gaussian's, minus the tanh and affine log-determinants (Haarnoja et al. 2018, SAC,
  appendix C), computed from ``u`` in the stable form ``2 (log 2 - u - softplus(-2u))``. The
  squashed Gaussian has no closed-form entropy: ``entropy()`` returns the entropy of the base
  Gaussian ``u`` instead (a common surrogate; it ignores the log-determinant term, which is what
  keeps an entropy bonus from pushing ``u`` into tanh's flat tails).
- ``clip``: ``a = clip(u, low, high)``; ``log_prob(u)`` is the Gaussian density of ``u``.

Rollouts record ``u``, not ``a``. Recovering ``u`` from ``a`` is not possible where tanh
saturates (``|u|`` above about 9 rounds to +-1 in float32) or the clip cuts: an earlier version
scored ``atanh`` of the clamped action, whose log-probability is steep in the mean there, and a
cheetah run's PPO log-ratios reached 24-93 after one update (docs/results.md).

``log_prob`` and ``entropy`` are summed over action dimensions (``Independent``), so both are
``(batch,)``. ``sample`` draws ``mean + std * randn(generator=...)`` detached (score-function
gradients go through ``log_prob``, never through the sample).
"""

from __future__ import annotations

import math
from typing import Literal

import gymnasium as gym
import torch
from pydantic import Field, model_validator
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from metods_core import ComponentConfig, Readout


class _TanhGaussian(Independent):
    """A diagonal Gaussian over pre-squash values ``u`` ``(batch, dims)``; ``log_prob(u)`` is
    the density of ``centre + half_width * tanh(u)``, ``entropy`` the base Gaussian's."""

    def __init__(self, normal: Normal, half_width: torch.Tensor) -> None:
        super().__init__(normal, 1, validate_args=False)
        self.half_width = half_width

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Return ``log N(u) - sum log(half_width * (1 - tanh(u)^2))`` ``(batch,)``."""
        log_tanh_derivative = 2 * (math.log(2.0) - value - nn.functional.softplus(-2 * value))
        log_det = (torch.log(self.half_width) + log_tanh_derivative).sum(-1)
        return super().log_prob(value) - log_det


def _normal(distribution: Distribution) -> Normal:
    """Return the element-wise Normal under a distribution built by ``GaussianReadout``."""
    base = distribution
    while not isinstance(base, Normal):
        if not isinstance(base, Independent):
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
        initial_mean_scale: float = Field(1.0, gt=0.0, le=1.0)
        """Factor on the mean head's initial weights and bias (PyTorch's default initialisation
        times this). Small (Andrychowicz et al. 2021 recommend 0.01 for PPO) centres the first
        actions on zero whatever the input; at 1 a random head drives every lifetime one way
        (ML1 reach, one rollout of the untrained policy on 10 goals, 6 seeds: the hand's mean
        displacement 19-44 cm at 1, 2-4 cm at 0.01; benchmarks/metaworld_initial_drift.py). It
        draws the same random numbers at any value, so the rest of the agent's initialisation
        does not change."""
        min_log_std: float = -5.0
        """Lower clamp of the log standard deviation."""
        max_log_std: float = 2.0
        """Upper clamp of the log standard deviation."""
        actions: Literal["squash", "clip"] = "squash"
        """squash: tanh to the Box bounds; clip: clip the Gaussian sample (the sample is scored)."""

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
        with torch.no_grad():
            self.mean.weight.mul_(config.initial_mean_scale)
            self.mean.bias.mul_(config.initial_mean_scale)
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
            distribution = _TanhGaussian(normal, (self.high - self.low) / 2)
        else:
            distribution = Independent(normal, 1, validate_args=False)
        return distribution, self.value(features).squeeze(-1)

    def env_action(self, sample: torch.Tensor) -> torch.Tensor:
        """Map samples ``u`` ``(batch, dims)`` to actions in the Box ``(batch, dims)``."""
        u = sample
        if self.config.actions == "squash":
            centre = (self.high + self.low) / 2
            half_width = (self.high - self.low) / 2
            u = centre + half_width * torch.tanh(u)
        # Clamp in both modes: rounding of centre + half_width * tanh may step past a bound.
        return torch.minimum(torch.maximum(u, self.low), self.high)

    def sample(self, distribution: Distribution, generator: torch.Generator) -> torch.Tensor:
        """Draw detached samples ``u`` ``(batch, dims)`` with ``generator``."""
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
        """Return the detached samples ``u = mean + std * noise`` ``(batch, dims)``."""
        normal = _normal(distribution)
        return normal.loc.detach() + normal.scale.detach() * noise

    def mode(self, distribution: Distribution) -> torch.Tensor:
        """Return the mean ``u`` ``(batch, dims)`` (``env_action`` maps it to the Box)."""
        return _normal(distribution).loc.detach()
