"""The 1-D Harlow task's rules, driven by scripted agents that read only the observations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from metods_plugins.tasks.harlow import LEFT, RIGHT, STAY, HarlowEnv, HarlowTasks
from pydantic import ValidationError

from metods_core.testing.torch_calls import CountTorchCalls

VIEW = 9
CENTRE = VIEW // 2
OFFSETS = torch.arange(-CENTRE, CENTRE + 1)
Policy = Callable[[torch.Tensor, HarlowEnv], torch.Tensor]


def make_env(
    batch: int = 8, seed: int = 0, split: str = "train", **config: Any
) -> tuple[HarlowTasks, HarlowEnv]:
    """Build the sampler and the env of ``batch`` tasks drawn with generator seed ``seed``."""
    sampler = HarlowTasks(HarlowTasks.Config(**config))
    tasks = sampler.sample(batch, split, torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    return sampler, sampler.make_env(tasks)


def seek(target_index: int) -> Policy:
    """Return a policy that walks to the object ``target_index`` when objects are shown, else to
    the fixation cross, else stays. It reads the observation only (plus the object's vector)."""

    def policy(observation: torch.Tensor, env: HarlowEnv) -> torch.Tensor:
        target = env.objects[:, target_index]
        fixation = observation[..., 0] > 0.5
        is_target = (observation[..., 1:] - target.unsqueeze(1)).abs().amax(-1) < 1e-6
        is_target[:, CENTRE] = False  # the centre shows the object just chosen
        target_side = (is_target.float() * OFFSETS).sum(-1).sign()
        fixation_side = (fixation.float() * OFFSETS).sum(-1).sign()
        side = torch.where(is_target.any(-1), target_side, fixation_side)
        return torch.where(side > 0, RIGHT, torch.where(side < 0, LEFT, STAY))

    return policy


def stay(observation: torch.Tensor, env: HarlowEnv) -> torch.Tensor:
    """Never move."""
    return torch.full((env.num_envs,), STAY)


@dataclass
class Episode:
    """A run's observations ``(steps + 1, batch, ...)`` and step results ``(steps, batch)``."""

    observations: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor


def run(env: HarlowEnv, policy: Policy, steps: int | None = None) -> Episode:
    """Reset ``env`` and step it ``steps`` times (default: a lifetime) under ``policy``."""
    observation, _ = env.reset()
    observations, rewards, terminated, truncated = [observation], [], [], []
    for _ in range(env.lifetime_steps if steps is None else steps):
        observation, reward, term, trunc, _ = env.step(policy(observation, env))
        observations.append(observation)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
    return Episode(
        torch.stack(observations),
        torch.stack(rewards),
        torch.stack(terminated),
        torch.stack(truncated),
    )


def choice_steps(episode: Episode) -> torch.Tensor:
    """Return the (step, task) indices where an object was chosen (reward of magnitude 1)."""
    return (episode.rewards.abs() > 0.5).nonzero()


def test_always_correct_policy_collects_the_ceiling() -> None:
    """Six presentations of fixation (+0.2) then the rewarded object (+1) give 7.2, terminated
    at the sixth choice, with accuracy 1 first and later."""
    _, env = make_env(batch=16)
    episode = run(env, seek(0))
    metrics = env.lifetime_metrics()
    torch.testing.assert_close(metrics["episode_reward"], torch.full((16,), 7.2))
    torch.testing.assert_close(episode.rewards.sum(0), torch.full((16,), 7.2))
    assert torch.equal(metrics["presentations"], torch.full((16,), 6.0))
    assert torch.equal(metrics["accuracy_first"], torch.ones(16))
    assert torch.equal(metrics["accuracy_later"], torch.ones(16))
    assert torch.equal(metrics["accuracy_by_presentation"], torch.ones(16, 6))
    # 3 steps to the cross, 3 to the object, then one step showing the choice, six times.
    assert torch.equal(episode.terminated.nonzero()[:, 0], torch.full((16,), 40))
    assert not episode.truncated.any()


def test_always_wrong_policy_scores_minus_one_per_choice() -> None:
    """Choosing the other object gives -1 each time: 6 x 0.2 - 6 = -4.8, accuracy 0."""
    _, env = make_env(batch=16)
    episode = run(env, seek(1))
    metrics = env.lifetime_metrics()
    torch.testing.assert_close(metrics["episode_reward"], torch.full((16,), -4.8))
    assert torch.equal(metrics["accuracy_first"], torch.zeros(16))
    assert torch.equal(metrics["accuracy_later"], torch.zeros(16))
    chosen = choice_steps(episode)
    assert len(chosen) == 6 * 16
    assert (episode.rewards[chosen[:, 0], chosen[:, 1]] == -1.0).all()
    assert episode.terminated.sum() == 16 and not episode.truncated.any()


def test_fixation_gives_its_reward_once() -> None:
    """The cross starts 3 cells away; reaching it gives +0.2 and it disappears."""
    _, env = make_env()
    episode = run(env, seek(0), steps=3)
    first = episode.observations[0, :, :, 0]
    assert torch.equal((first * OFFSETS).sum(-1).abs(), torch.full((8,), 3.0))
    assert torch.equal(episode.rewards[:2], torch.zeros(2, 8))
    torch.testing.assert_close(episode.rewards[2], torch.full((8,), 0.2))
    assert not episode.observations[3, :, :, 0].any()


def test_objects_appear_three_cells_either_side() -> None:
    """At the cross, the episode's two objects appear 3 cells left and right, nothing else."""
    _, env = make_env()
    episode = run(env, seek(0), steps=3)
    vectors = episode.observations[3, :, :, 1:]
    shown = vectors.abs().sum(-1) > 0
    expected = torch.zeros(VIEW, dtype=torch.bool)
    expected[CENTRE - 3] = expected[CENTRE + 3] = True
    assert torch.equal(shown, expected.expand(8, -1))
    pair = torch.stack([vectors[:, CENTRE - 3], vectors[:, CENTRE + 3]], dim=1)
    is_rewarded_left = torch.isclose(pair[:, 0], env.objects[:, 0]).all(-1)
    swapped = torch.where(is_rewarded_left[:, None, None], env.objects, env.objects.flip(1))
    torch.testing.assert_close(pair, swapped)


def test_chosen_object_is_shown_under_the_agent_for_one_step() -> None:
    """At a choice the chosen object shows at the centre, alone; the next step it is gone and
    the next cross shows 3 cells to one side."""
    _, env = make_env()
    episode = run(env, seek(0), steps=7)
    assert torch.equal(episode.rewards[5], torch.ones(8))
    at_choice = episode.observations[6]
    assert not at_choice[..., 0].any()
    torch.testing.assert_close(at_choice[:, CENTRE, 1:], env.objects[:, 0])
    others = torch.cat([at_choice[:, :CENTRE, 1:], at_choice[:, CENTRE + 1 :, 1:]], dim=1)
    assert not others.any()
    after = episode.observations[7]
    assert not after[..., 1:].any()
    assert torch.equal((after[..., 0] * OFFSETS).sum(-1).abs(), torch.full((8,), 3.0))


def test_rewarded_object_side_is_shuffled() -> None:
    """The rewarded object appears on the left in some presentations and the right in others."""
    _, env = make_env(batch=64)
    episode = run(env, seek(0), steps=3)
    vectors = episode.observations[3, :, CENTRE - 3, 1:]
    left = torch.isclose(vectors, env.objects[:, 0]).all(-1).float().mean()
    assert 0.2 < left < 0.8


def test_episode_ends_after_75_steps() -> None:
    """An agent that never chooses is truncated at step 75, not terminated, with no reward."""
    sampler, env = make_env()
    assert sampler.lifetime_steps == env.lifetime_steps == 75
    episode = run(env, stay)
    assert not episode.terminated.any() and not episode.rewards.any()
    assert torch.equal(episode.truncated.nonzero()[:, 0], torch.full((8,), 74))
    metrics = env.lifetime_metrics()
    assert metrics["accuracy_first"].isnan().all() and metrics["accuracy_later"].isnan().all()


def test_finished_episodes_stay_frozen() -> None:
    """After termination, steps give no reward and no flags."""
    _, env = make_env()
    episode = run(env, seek(0), steps=50)
    assert not episode.rewards[41:].any()
    assert episode.terminated[40].all() and not episode.terminated[41:].any()
    assert not episode.truncated.any()
    torch.testing.assert_close(env.lifetime_metrics()["episode_reward"], torch.full((8,), 7.2))


def test_each_task_follows_its_own_agent() -> None:
    """Tasks of one batch at different stages evolve independently."""
    _, env = make_env(batch=3)
    correct, wrong = seek(0), seek(1)

    def mixed(observation: torch.Tensor, env: HarlowEnv) -> torch.Tensor:
        actions = torch.stack(
            [correct(observation, env), wrong(observation, env), stay(observation, env)]
        )
        return actions[torch.arange(3), torch.arange(3)]

    episode = run(env, mixed)
    torch.testing.assert_close(
        env.lifetime_metrics()["episode_reward"], torch.tensor([7.2, -4.8, 0.0])
    )
    assert episode.terminated[:, :2].any(0).all() and episode.truncated[74, 2]


def test_step_is_batched_without_a_python_loop() -> None:
    """A step costs the same number of torch calls for 2 tasks as for 64 (no loop over tasks)."""
    counts = []
    for batch in (2, 64):
        _, env = make_env(batch=batch)
        observation, _ = env.reset()
        policy = seek(0)
        with CountTorchCalls() as counter:
            for _ in range(10):
                observation, *_ = env.step(policy(observation, env))
        counts.append(counter.calls)
    assert counts[0] == counts[1]


def test_train_and_test_splits_are_disjoint() -> None:
    """No object of any test batch appears in any train batch, for the same generator seeds."""
    sampler = HarlowTasks(HarlowTasks.Config())
    train = [
        sampler.sample(32, "train", torch.Generator().manual_seed(s)).objects for s in range(5)
    ]
    test = [sampler.sample(32, "test", torch.Generator().manual_seed(s)).objects for s in range(5)]
    train_objects = torch.cat(train).reshape(-1, sampler.config.object_dim)
    test_objects = torch.cat(test).reshape(-1, sampler.config.object_dim)
    distances = torch.cdist(train_objects, test_objects)
    assert distances.min() > 1e-6


def test_same_seed_gives_the_same_episode() -> None:
    """The same generator seed gives the same objects, sides and rewards; another seed not."""
    episodes = []
    for seed in (0, 0, 1):
        _, env = make_env(seed=seed)
        episodes.append((env.objects.clone(), run(env, seek(0))))
    (objects_a, a), (objects_b, b), (objects_c, _) = episodes
    assert torch.equal(objects_a, objects_b) and not torch.equal(objects_a, objects_c)
    assert torch.equal(a.observations, b.observations) and torch.equal(a.rewards, b.rewards)


def test_sampling_uses_only_the_given_generator() -> None:
    """Sampling tasks and stepping their env never touches torch's global RNG."""
    state = torch.get_rng_state()
    _, env = make_env()
    run(env, seek(0))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("config", [{"view": 8}, {"line_length": 6, "object_offset": 3}])
def test_bad_geometry_is_rejected(config: dict[str, int]) -> None:
    """An even view or objects wrapping around the line fail validation."""
    with pytest.raises(ValidationError):
        HarlowTasks.Config(**config)
