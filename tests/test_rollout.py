"""Rollouts that record what a replay needs, replays, and the outer batch's env bookkeeping."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metods_core.interfaces import OuterBatch
from metods_core.rollout import replay_lifetimes, replay_steps, run_lifetimes
from metods_core.testing._common import state_leaves
from metods_core.testing.fakes import FakeEnv, FakeTasks, create_tiny_agent


def _rollout(record: bool = True, continuous: bool = False):
    sampler = FakeTasks(FakeTasks.Config(continuous=continuous))
    agent, _ = create_tiny_agent(sampler)
    tasks = sampler.sample(5, "train", torch.Generator().manual_seed(0))
    lifetimes = run_lifetimes(
        agent, sampler.make_env(tasks), torch.Generator().manual_seed(1), record=record
    )
    return agent, sampler, tasks, lifetimes


def test_rollout_keeps_no_record_unless_asked() -> None:
    """``record=False`` (the default) keeps nothing extra."""
    assert _rollout(record=False)[3].record is None


def test_record_has_one_entry_per_step_and_lifetime() -> None:
    """Every recorded tensor is ``(steps, batch, ...)`` and detached."""
    _, sampler, _, lifetimes = _rollout()
    record = lifetimes.record
    assert record is not None
    steps, batch = sampler.lifetime_steps, 5
    assert record.observations.shape == (steps, batch, *sampler.observation_space.shape)
    assert record.previous_rewards.shape == record.new_episode.shape == (steps, batch)
    assert record.actions.shape[:2] == (steps, batch)
    assert not record.observations.requires_grad
    assert not record.previous_actions[0].any() and not record.previous_rewards[0].any()


def test_replay_reproduces_the_rollout_exactly() -> None:
    """Replaying recorded lifetimes with unchanged meta-parameters gives the same outputs."""
    for continuous in (False, True):
        agent, _, _, lifetimes = _rollout(continuous=continuous)
        assert lifetimes.record is not None
        replay = replay_lifetimes(agent, lifetimes.record)
        assert torch.equal(replay.log_probs, lifetimes.log_probs)
        assert torch.equal(replay.values, lifetimes.values)
        assert torch.equal(replay.entropies, lifetimes.entropies)


def test_replay_of_a_selection_matches_those_lifetimes() -> None:
    """A minibatch of whole lifetimes replays to the same outputs as in the full batch."""
    agent, _, _, lifetimes = _rollout()
    assert lifetimes.record is not None
    chosen = torch.tensor([3, 0])
    replay = replay_lifetimes(agent, lifetimes.record.select(chosen))
    torch.testing.assert_close(replay.log_probs, lifetimes.log_probs[:, chosen])
    torch.testing.assert_close(replay.values, lifetimes.values[:, chosen])


def test_replay_in_spans_chains_the_plastic_state() -> None:
    """Replaying [0, k) then [k, T) from the carried state equals one replay of [0, T)."""
    agent, _, _, lifetimes = _rollout()
    record = lifetimes.record
    assert record is not None
    steps = record.previous_rewards.shape[0]
    first, state = replay_steps(agent, record, agent.init_state(5), 0, 2)
    second, _ = replay_steps(agent, record, state, 2, steps)
    whole = replay_lifetimes(agent, record)
    assert torch.equal(torch.cat([first.log_probs, second.log_probs]), whole.log_probs)


def test_replay_carries_gradients_to_the_meta_parameters() -> None:
    """A loss on replayed log-probabilities reaches the rule's parameters (BPTT)."""
    agent, _, _, lifetimes = _rollout()
    assert lifetimes.record is not None
    replay_lifetimes(agent, lifetimes.record).log_probs.sum().backward()
    assert agent.rule.rate.grad is not None and agent.rule.rate.grad != 0


def test_task_batch_repeat_tiles_every_task_field() -> None:
    """``repeat(k)`` tiles the tasks member-major, keeps the env seed and multiplies the
    recorded copies (1 for a sampled batch)."""
    _, _, tasks, _ = _rollout()
    tiled = tasks.repeat(3)
    assert tiled.size == 15 and tiled.seed == tasks.seed and tiled.split == tasks.split
    assert tasks.copies == 1 and tiled.copies == 3 and tiled.repeat(2).copies == 6
    for field in dataclasses.fields(tasks):
        value = getattr(tasks, field.name)
        if isinstance(value, torch.Tensor):
            assert torch.equal(getattr(tiled, field.name)[10:15], value)


def test_task_batch_select_slices_every_task_field_under_its_own_seed() -> None:
    """``select(a, b, seed)`` is tasks ``a`` to ``b - 1`` with the given env seed; a batch of
    tiled copies and an empty or out-of-range part are refused."""
    _, _, tasks, _ = _rollout()
    part = tasks.select(1, 4, seed=99)
    assert part.size == 3 and part.seed == 99 and part.split == tasks.split and part.copies == 1
    for field in dataclasses.fields(tasks):
        value = getattr(tasks, field.name)
        if isinstance(value, torch.Tensor):
            assert torch.equal(getattr(part, field.name), value[1:4])
    for start, stop in ((2, 2), (-1, 3), (0, tasks.size + 1)):
        with pytest.raises(ValueError, match="not a range"):
            tasks.select(start, stop, seed=0)
    with pytest.raises(ValueError, match="tiled copies"):
        tasks.repeat(2).select(0, 1, seed=0)


class ClosingEnv(FakeEnv):
    closed = 0

    def close(self) -> None:
        ClosingEnv.closed += 1


def test_outer_batch_closes_every_env_it_built() -> None:
    """Envs built through the outer batch are closed by ``close()``; rebuilt envs agree."""
    sampler = FakeTasks(FakeTasks.Config())
    agent, _ = create_tiny_agent(sampler)
    tasks = sampler.sample(4, "train", torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(agent.parameters(), lr=0.1)

    def batch() -> OuterBatch:
        return OuterBatch(
            tasks=tasks,
            build_env=lambda t: ClosingEnv(sampler, t),
            optimizer=optimizer,
            backward=lambda loss: loss.backward(),
            generator=torch.Generator().manual_seed(7),
        )

    first, second = batch(), batch()
    a = first.run_lifetimes(agent)
    b = second.run_lifetimes(agent)
    first.make_env(tasks.repeat(2))
    assert torch.equal(a.rewards, b.rewards)
    ClosingEnv.closed = 0
    first.close()
    second.close()
    assert ClosingEnv.closed == 3
    first.close()
    assert ClosingEnv.closed == 3
    assert torch.equal(first.all_reduce(torch.ones(2)), torch.ones(2))


def _states_passed(freeze_memory: int | None):
    """Run 5 lifetimes, recording the state given to every step and the one each returned."""
    sampler = FakeTasks(FakeTasks.Config(continuous=True, steps=8))
    agent, _ = create_tiny_agent(sampler)
    tasks = sampler.sample(5, "train", torch.Generator().manual_seed(0))
    given, returned = [], []
    step = agent.step  # the tiny read-out samples outside the step (no ``act``)

    def spy(*args):
        distribution, value, state = step(*args)
        given.append(args[3])
        returned.append(state)
        return distribution, value, state

    agent.step = spy  # type: ignore[method-assign]
    lifetimes = run_lifetimes(
        agent,
        sampler.make_env(tasks),
        torch.Generator().manual_seed(1),
        freeze_memory=freeze_memory,
    )
    return agent, given, returned, lifetimes


def _equal(a, b) -> bool:
    leaves_a, leaves_b = state_leaves(a), state_leaves(b)
    return len(leaves_a) == len(leaves_b) and all(map(torch.equal, leaves_a, leaves_b))


def test_frozen_memory_holds_the_state_reached_after_k_steps() -> None:
    """``freeze_memory=K``: steps before K run as without the lesion; every step from K on is
    given the state after step K - 1, whatever the steps after it returned."""
    _, plain_given, _, plain = _states_passed(None)
    k = 3
    _, given, returned, frozen = _states_passed(k)
    steps = len(given)
    assert steps == len(plain_given) > k + 2
    for t in range(k + 1):  # the same inputs, so the same states, up to step K's
        assert _equal(given[t], plain_given[t])
    for t in range(k, steps):
        assert _equal(given[t], returned[k - 1])
    assert not _equal(returned[k], returned[k - 1])  # the rule did write: the lesion drops it
    torch.testing.assert_close(frozen.rewards[:k], plain.rewards[:k])
    assert not torch.equal(frozen.log_probs[k + 1 :], plain.log_probs[k + 1 :])


def test_memory_frozen_from_step_0_is_the_memoryless_policy() -> None:
    """``freeze_memory=0`` gives every step the agent's initial state."""
    agent, given, _, _ = _states_passed(0)
    initial = agent.init_state(5)
    assert all(_equal(state, initial) for state in given)


@pytest.mark.parametrize("step", [-1, 8])
def test_freeze_memory_outside_the_lifetime_is_refused(step: int) -> None:
    """K must be a step of the lifetime (here 8 steps)."""
    sampler = FakeTasks(FakeTasks.Config(steps=8))
    agent, _ = create_tiny_agent(sampler)
    tasks = sampler.sample(2, "train", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"freeze_memory must be in \[0, 8\)"):
        run_lifetimes(agent, sampler.make_env(tasks), torch.Generator(), freeze_memory=step)


def test_a_lesioned_rollout_is_not_recorded() -> None:
    """A replay would not hold the state, so ``record`` with ``freeze_memory`` is refused."""
    sampler = FakeTasks(FakeTasks.Config())
    agent, _ = create_tiny_agent(sampler)
    tasks = sampler.sample(2, "train", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="cannot be recorded"):
        run_lifetimes(
            agent, sampler.make_env(tasks), torch.Generator(), record=True, freeze_memory=1
        )
