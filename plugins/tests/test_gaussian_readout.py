"""The Gaussian read-out: sampling with the generator, exact squashed log-densities, clipping."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from metods_plugins.readout.gaussian import GaussianReadout

from metods_core.testing import check_readout

BOX = gym.spaces.Box(
    np.array([-0.5, 0.0, -2.0], np.float32), np.array([0.5, 1.0, 2.0], np.float32), dtype=np.float32
)


def build(**config: Any) -> GaussianReadout:
    torch.manual_seed(0)
    return GaussianReadout(GaussianReadout.Config(**config), 4, BOX)


@pytest.mark.parametrize(
    "config",
    [
        {"actions": "squash", "log_std": "state_independent"},
        {"actions": "squash", "log_std": "learned", "hidden": 5},
        {"actions": "clip", "log_std": "learned"},
        {"actions": "clip", "log_std": "state_independent", "initial_log_std": -1.0},
    ],
    ids=lambda config: "-".join(str(value) for value in config.values()),
)
def test_every_variant_conforms_in_an_asymmetric_box(config: dict[str, Any]) -> None:
    """Each log-std and action variant passes the read-out suite in a Box with uneven bounds."""
    check_readout(GaussianReadout, BOX, **config)


def test_only_bounded_one_dimensional_boxes_are_supported() -> None:
    """Discrete, unbounded or multi-dimensional spaces are refused."""
    assert GaussianReadout.supports(BOX)
    assert not GaussianReadout.supports(gym.spaces.Discrete(3))
    assert not GaussianReadout.supports(gym.spaces.Box(-np.inf, np.inf, (2,)))
    assert not GaussianReadout.supports(gym.spaces.Box(-1.0, 1.0, (2, 2)))
    with pytest.raises(ValueError, match="Box"):
        GaussianReadout(GaussianReadout.Config(), 4, gym.spaces.Discrete(3))


def test_initial_mean_scale_shrinks_only_the_mean_head() -> None:
    """``initial_mean_scale`` multiplies the mean head's initial weights and bias; every other
    parameter is initialised exactly as at 1 (the same random numbers are drawn)."""
    plain, small = build(), build(initial_mean_scale=0.01)
    for (name, a), (_, b) in zip(plain.named_parameters(), small.named_parameters(), strict=True):
        expected = a * 0.01 if name.startswith("mean.") else a
        torch.testing.assert_close(b, expected)
    y = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    plain_mean, small_mean = plain.mode(plain(y)[0]), small.mode(small(y)[0])
    torch.testing.assert_close(small_mean, plain_mean * 0.01)
    with pytest.raises(ValueError):
        GaussianReadout.Config(initial_mean_scale=0.0)


@pytest.mark.parametrize("actions", ["squash", "clip"])
def test_sample_is_mean_plus_std_times_the_generators_noise(actions: str) -> None:
    """``sample`` is ``loc + scale * randn(generator)``, detached, and ``mode`` the mean;
    ``env_action`` maps either to the Box (tanh and rescale, or clip)."""
    readout = build(actions=actions)
    distribution, _ = readout(torch.randn(5, 4))
    sample = readout.sample(distribution, torch.Generator().manual_seed(3))
    normal = distribution.base_dist
    noise = torch.randn(5, 3, generator=torch.Generator().manual_seed(3))
    u = (normal.loc + normal.scale * noise).detach()
    low, high = torch.tensor(BOX.low), torch.tensor(BOX.high)
    if actions == "squash":
        action = (high + low) / 2 + (high - low) / 2 * torch.tanh(u)
        mode = (high + low) / 2 + (high - low) / 2 * torch.tanh(normal.loc)
    else:
        action, mode = torch.clamp(u, low, high), torch.clamp(normal.loc, low, high)
    torch.testing.assert_close(sample, u)
    torch.testing.assert_close(readout.mode(distribution), normal.loc.detach())
    torch.testing.assert_close(readout.env_action(sample), action)
    torch.testing.assert_close(readout.env_action(readout.mode(distribution)), mode.detach())
    assert not sample.requires_grad


def test_squashed_log_prob_includes_the_change_of_variables() -> None:
    """log p(a) = sum_i [log N(u_i) - log(1 - tanh(u_i)^2) - log(half_width_i)], scored at the
    sample u; entropy is the base Gaussian's, summed over dimensions."""
    readout = build(actions="squash", initial_log_std=-0.3)
    distribution, _ = readout(torch.randn(5, 4))
    u = readout.sample(distribution, torch.Generator().manual_seed(1))
    normal = distribution.base_dist
    half = (torch.tensor(BOX.high) - torch.tensor(BOX.low)) / 2
    expected = (normal.log_prob(u) - torch.log1p(-(torch.tanh(u) ** 2)) - torch.log(half)).sum(-1)
    torch.testing.assert_close(distribution.log_prob(u), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(distribution.entropy(), normal.entropy().sum(-1))
    per_dimension = 0.5 * math.log(2 * math.pi * math.e) - 0.3
    torch.testing.assert_close(distribution.entropy(), torch.full((5,), 3 * per_dimension))


def test_saturated_samples_are_scored_exactly() -> None:
    """Samples far in tanh's tails (their actions round to the bounds in float32) keep the
    exact log-density, and a small move of the mean moves it by the Gaussian's amount only.

    The regression: scoring atanh of the clamped action put u near 8.3 whatever the sample,
    so with the means at (15, -12, 10) and std 0.1 a 0.01 step of the means moved the log-prob
    by 4.7 nats (measured with the old transform).
    """
    readout = build(actions="squash", initial_log_std=math.log(0.1))
    with torch.no_grad():
        readout.mean.weight.zero_()
        readout.mean.bias.copy_(torch.tensor([15.0, -12.0, 10.0]))
    distribution, _ = readout(torch.zeros(1, 4))
    u = readout.sample(distribution, torch.Generator().manual_seed(0))
    action = readout.env_action(u)
    assert torch.equal(action, torch.tensor([[0.5, 0.0, 2.0]]))
    u64, loc64 = u.double(), distribution.base_dist.loc.double()
    half = (torch.tensor(BOX.high) - torch.tensor(BOX.low)).double() / 2
    exact = (
        torch.distributions.Normal(loc64, 0.1).log_prob(u64)
        - torch.log(half * (1 - torch.tanh(u64) ** 2))
    ).sum(-1)
    torch.testing.assert_close(distribution.log_prob(u).double(), exact, rtol=1e-5, atol=1e-3)
    with torch.no_grad():
        readout.mean.bias.add_(0.01)
    moved, _ = readout(torch.zeros(1, 4))
    log_ratio = moved.log_prob(u) - distribution.log_prob(u)
    gaussian = torch.distributions.Normal(loc64 + 0.01, 0.1).log_prob(u64).sum(-1) - (
        torch.distributions.Normal(loc64, 0.1).log_prob(u64).sum(-1)
    )
    torch.testing.assert_close(log_ratio.double(), gaussian, atol=1e-3, rtol=1e-3)
    assert log_ratio.abs().max() < 1.0


def test_clip_keeps_actions_in_the_box_and_scores_the_unclipped_sample() -> None:
    """With a wide Gaussian, clipped actions stay in the Box and some lie on its bounds; the
    log-probability is the Gaussian density of the sample itself."""
    readout = build(actions="clip", initial_log_std=2.0)
    distribution, _ = readout(torch.randn(64, 4))
    u = readout.sample(distribution, torch.Generator().manual_seed(0))
    action = readout.env_action(u)
    low, high = torch.tensor(BOX.low), torch.tensor(BOX.high)
    assert ((action >= low) & (action <= high)).all()
    assert ((action == low) | (action == high)).any()
    torch.testing.assert_close(distribution.log_prob(u), distribution.base_dist.log_prob(u).sum(-1))


def test_log_std_is_clamped() -> None:
    """A learned log-std head is clamped to [min_log_std, max_log_std]."""
    readout = build(log_std="learned", min_log_std=-1.0, max_log_std=0.5)
    distribution, _ = readout(torch.randn(8, 4) * 100)
    scale = distribution.base_dist.scale
    assert scale.min() >= math.exp(-1.0) - 1e-6 and scale.max() <= math.exp(0.5) + 1e-6


def test_readouts_skip_argument_validation() -> None:
    """Neither read-out validates its distribution's arguments: on a GPU each check is a
    host-device sync per env step (the training loop checks gradients and the loss instead)."""
    import gymnasium as gym
    from metods_plugins.readout.categorical import CategoricalReadout

    discrete = CategoricalReadout(CategoricalReadout.Config(), 4, gym.spaces.Discrete(3))
    distribution, _ = discrete(torch.full((2, 4), float("nan")))
    assert not distribution._validate_args
    for actions in ("squash", "clip"):
        box = gym.spaces.Box(-1.0, 1.0, (2,))
        gaussian = GaussianReadout(GaussianReadout.Config(actions=actions), 4, box)
        distribution, _ = gaussian(torch.zeros(2, 4))
        parts = [distribution]
        while hasattr(parts[-1], "base_dist"):
            parts.append(parts[-1].base_dist)
        assert not any(part._validate_args for part in parts)
