"""The lockstep step count of the simulator-backed task families (MuJoCo, Meta-World)."""

from __future__ import annotations

import torch
from metods_plugins.tasks.lifetime_clock import LifetimeClock


def test_boundaries_fall_at_the_end_of_each_episode_and_the_last_step_truncates() -> None:
    """3 episodes of 2 steps: boundaries after steps 2, 4 and 6; only step 6 is truncated;
    nothing terminates; then the lifetime is over until reset."""
    clock = LifetimeClock(num_envs=4, episode_steps=2, episodes=3, device=torch.device("cpu"))
    seen = []
    while not clock.over:
        boundary = clock.advance()
        terminated, truncated, info = clock.outcome(boundary)
        assert terminated.shape == truncated.shape == (4,) and not terminated.any()
        assert torch.equal(info["episode_boundary"], torch.full((4,), boundary))
        seen.append((clock.steps, boundary, bool(truncated.all()), bool(truncated.any())))
    assert seen == [
        (1, False, False, False),
        (2, True, False, False),
        (3, False, False, False),
        (4, True, False, False),
        (5, False, False, False),
        (6, True, True, True),
    ]
    clock.reset()
    assert clock.steps == 0 and not clock.over


def test_after_the_end_nothing_moves_and_every_lifetime_is_truncated() -> None:
    """Past the lifetime: the same observation, zero reward, truncated, no boundary."""
    clock = LifetimeClock(num_envs=3, episode_steps=1, episodes=1, device=torch.device("cpu"))
    clock.advance()
    observation = torch.randn(3, 5)
    kept, reward, terminated, truncated, info = clock.after_the_end(observation)
    assert kept is observation and torch.equal(reward, torch.zeros(3))
    assert not terminated.any() and truncated.all() and not info["episode_boundary"].any()
