"""Conformance suite of ``Readout`` plugins.

Every check takes the read-out's class, an action space it supports and optional config
overrides (``check(cls, action_space, **config)``) and raises ``AssertionError`` with a message
that says what is wrong. ``check_readout`` runs them all::

    import gymnasium as gym
    from metods_core.testing import check_readout
    check_readout(MyReadout, gym.spaces.Box(-1.0, 1.0, (2,)))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metods_core.interfaces import Readout
from metods_core.testing import _common
from metods_core.testing._common import (
    BATCH,
    build_config,
    gradient_problems,
    run_suite,
)

INPUT_SIZE = 6
"""Width of the read-out's input in every check."""
ACTION_SPACES: tuple[gym.Space, ...] = (
    gym.spaces.Discrete(3),
    gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
)
"""The action spaces a read-out is checked in, where it ``supports`` them."""


def build_readout(
    cls: type[Readout], action_space: gym.Space, config: dict[str, Any], seed: int = 0
) -> Readout:
    """Build ``cls`` for ``action_space`` after ``torch.manual_seed(seed)``.

    The caller's global RNG state is restored afterwards.
    """
    built = build_config(cls, config)
    assert cls.supports(action_space), (
        f"{cls.__name__}.supports({action_space}) is False: check it in a space it supports"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        readout = cls(built, INPUT_SIZE, action_space)  # type: ignore[call-arg]
    assert isinstance(readout, Readout), (
        f"{cls.__name__}(config, input_size, action_space) built a {type(readout).__name__}"
    )
    return readout


def _inputs(seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, INPUT_SIZE, generator=generator).to(dtype)


def _assert_actions(actions: torch.Tensor, action_space: gym.Space, what: str) -> None:
    assert isinstance(actions, torch.Tensor), f"{what} returned {type(actions).__name__}"
    expected = (BATCH, *(action_space.shape or ()))
    assert tuple(actions.shape) == expected, (
        f"{what} gave actions of shape {tuple(actions.shape)}, expected {expected}"
    )
    if isinstance(action_space, gym.spaces.Discrete):
        assert not actions.is_floating_point() and actions.dtype != torch.bool, (
            f"{what} gave {actions.dtype} actions for a Discrete space; use an integer dtype"
        )
    for i, action in enumerate(actions):
        value = np.asarray(action.detach().cpu())
        assert action_space.contains(value), (
            f"{what}: task {i}'s action {value} not in {action_space}"
        )


def check_config_round_trip(cls: type[Readout], action_space: gym.Space, /, **config: Any) -> None:
    """The config survives a YAML round trip (see ``_common.check_config_round_trip``)."""
    _common.check_config_round_trip(cls, **config)


def check_config_strict(cls: type[Readout], action_space: gym.Space, /, **config: Any) -> None:
    """The config rejects unknown keys and documents every field."""
    _common.check_config_strict(cls, **config)


def check_construction(cls: type[Readout], action_space: gym.Space, /, **config: Any) -> None:
    """The read-out builds as ``cls(cls.Config(**config), input_size, action_space)``."""
    build_readout(cls, action_space, config)


def check_forward_shapes(cls: type[Readout], action_space: gym.Space, /, **config: Any) -> None:
    """``forward`` gives a distribution of batch shape ``(batch,)`` and float values ``(batch,)``;
    ``log_prob`` and ``entropy`` (used by the rollout) are ``(batch,)`` and finite."""
    readout = build_readout(cls, action_space, config)
    distribution, value = readout(_inputs())
    assert isinstance(distribution, torch.distributions.Distribution), (
        f"forward returned {type(distribution).__name__}, not a torch Distribution"
    )
    assert tuple(distribution.batch_shape) == (BATCH,), (
        f"distribution batch_shape {tuple(distribution.batch_shape)}, expected ({BATCH},): "
        "wrap multi-dimensional actions in torch.distributions.Independent"
    )
    assert isinstance(value, torch.Tensor) and value.shape == (BATCH,), (
        f"value has shape {tuple(getattr(value, 'shape', ()))}, expected ({BATCH},)"
    )
    assert value.dtype == torch.float32, f"value dtype {value.dtype}, expected float32"
    assert torch.isfinite(value).all(), "non-finite value estimate"
    action = readout.sample(distribution, torch.Generator().manual_seed(0))
    for name, tensor in (
        ("log_prob", distribution.log_prob(action)),
        ("entropy", distribution.entropy()),
    ):
        assert tensor.shape == (BATCH,), (
            f"{name} has shape {tuple(tensor.shape)}, expected ({BATCH},)"
        )
        assert torch.isfinite(tensor).all(), f"non-finite {name}"


def check_sample(cls: type[Readout], action_space: gym.Space, /, **config: Any) -> None:
    """``sample`` gives samples whose ``env_action`` lies in the space, reproducibly from the
    generator alone, varying with it, and without touching the global RNG."""
    readout = build_readout(cls, action_space, config)
    with torch.no_grad():
        distribution, _ = readout(_inputs())
    global_state = torch.get_rng_state()
    first = readout.sample(distribution, torch.Generator().manual_seed(0))
    second = readout.sample(distribution, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), global_state), (
        "sample used the global RNG: draw with the generator it is given"
    )
    _assert_actions(readout.env_action(first), action_space, "env_action(sample)")
    assert torch.equal(first, second), (
        "sample with equally seeded generators gave different actions"
    )
    generator = torch.Generator().manual_seed(1)
    draws = torch.stack([readout.sample(distribution, generator) for _ in range(32)])
    assert not (draws == draws[0]).all(), "32 samples were identical: sample does not sample"


def check_noise_sampling(cls: type[Readout], action_space: gym.Space, /, **config: Any) -> None:
    """Where ``draw_noise`` gives noise (optional), ``sample_from_noise`` on a lifetime's noise
    gives detached samples whose ``env_action`` lies in the space, varying over the steps;
    noise drawn for ``(steps, batch)`` has that shape in front and never uses the global RNG."""
    readout = build_readout(cls, action_space, config)
    global_state = torch.get_rng_state()
    noise = readout.draw_noise((4, BATCH), torch.Generator().manual_seed(0))
    if noise is None:
        return  # the rollout calls sample() at every step instead
    assert torch.equal(torch.get_rng_state(), global_state), "draw_noise used the global RNG"
    assert noise.shape[:2] == (4, BATCH), f"draw_noise((4, {BATCH})) gave shape {noise.shape}"
    y = _inputs().requires_grad_(True)
    distribution, _ = readout(y)
    actions = torch.stack([readout.sample_from_noise(distribution, step) for step in noise])
    assert not actions.requires_grad, "sample_from_noise must return detached samples"
    for step in actions:
        _assert_actions(readout.env_action(step), action_space, "env_action(sample_from_noise)")
    assert not (actions == actions[0]).all(), "four steps of noise gave identical actions"


def check_mode(cls: type[Readout], action_space: gym.Space, /, **config: Any) -> None:
    """``mode`` gives a sample whose ``env_action`` lies in the space, the same every time,
    without the global RNG."""
    readout = build_readout(cls, action_space, config)
    with torch.no_grad():
        distribution, _ = readout(_inputs())
    global_state = torch.get_rng_state()
    first, second = readout.mode(distribution), readout.mode(distribution)
    assert torch.equal(torch.get_rng_state(), global_state), "mode used the global RNG"
    _assert_actions(readout.env_action(first), action_space, "env_action(mode)")
    assert torch.equal(first, second), "mode is not deterministic"


def check_gradients(cls: type[Readout], action_space: gym.Space, /, **config: Any) -> None:
    """A loss on log-probabilities, entropy and values gives every trainable parameter and the
    input a finite, non-zero gradient."""
    readout = build_readout(cls, action_space, config)
    y = _inputs().requires_grad_(True)
    distribution, value = readout(y)
    action = readout.sample(distribution, torch.Generator().manual_seed(0))
    weights = torch.randn(3, BATCH, generator=torch.Generator().manual_seed(3))
    loss = (
        weights[0] * distribution.log_prob(action)
        + weights[1] * value
        + weights[2] * distribution.entropy()
    ).sum()
    loss.backward()
    problems = gradient_problems(readout)
    assert not problems, "gradients after an actor-critic loss:\n  " + "\n  ".join(problems)
    assert y.grad is not None and y.grad.abs().sum() > 0, (
        "no gradient reaches the read-out's input, so the rule cannot learn"
    )


def check_determinism(cls: type[Readout], action_space: gym.Space, /, **config: Any) -> None:
    """The same seed before construction gives the same values, log-probabilities and actions."""
    runs = []
    for _ in range(2):
        readout = build_readout(cls, action_space, config, seed=0)
        with torch.no_grad():
            distribution, value = readout(_inputs())
            action = readout.sample(distribution, torch.Generator().manual_seed(0))
            runs.append((value, action, distribution.log_prob(action)))
    for name, first, second in zip(("values", "actions", "log_prob"), *runs, strict=True):
        assert torch.equal(first, second), (
            f"two read-outs built after the same torch.manual_seed gave different {name}"
        )


def check_follows_module_dtype(
    cls: type[Readout], action_space: gym.Space, /, **config: Any
) -> None:
    """After ``readout.to(torch.float64)`` values and log-probabilities are float64."""
    readout = build_readout(cls, action_space, config).to(torch.float64)
    distribution, value = readout(_inputs(dtype=torch.float64))
    assert value.dtype == torch.float64, f"a float64 read-out returned {value.dtype} values"
    log_prob = distribution.log_prob(readout.mode(distribution))
    assert log_prob.dtype == torch.float64, f"a float64 read-out gave {log_prob.dtype} log_prob"


READOUT_CHECKS: dict[str, Callable[..., None]] = {
    "config_round_trip": check_config_round_trip,
    "config_strict": check_config_strict,
    "construction": check_construction,
    "forward_shapes": check_forward_shapes,
    "sample": check_sample,
    "noise_sampling": check_noise_sampling,
    "mode": check_mode,
    "gradients": check_gradients,
    "determinism": check_determinism,
    "follows_module_dtype": check_follows_module_dtype,
}
"""Every check of the read-out suite, by name: ``check(cls, action_space, **config)``."""


def check_readout(cls: type[Readout], action_space: gym.Space, /, **config: Any) -> None:
    """Run every check of ``READOUT_CHECKS`` on ``cls`` in ``action_space``.

    Args:
        cls: the read-out's class.
        action_space: an action space that ``cls.supports``.
        **config: overrides of ``cls.Config``'s defaults.

    Raises:
        AssertionError: one or more checks failed; the message lists each.
    """
    run_suite(
        f"read-out {cls.__name__} in {action_space}", READOUT_CHECKS, cls, action_space, **config
    )
