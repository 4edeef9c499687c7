"""Conformance suite of ``TaskSampler`` plugins and the batched environments they build.

Every check takes the sampler's class and optional config overrides (``check(cls, **config)``)
and raises ``AssertionError`` with a message that says what is wrong. ``check_task_sampler``
runs them all::

    from metods_core.testing import check_task_sampler
    check_task_sampler(MyTasks, max_steps=20)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metods_core.interfaces import BatchedEnv, Split, TaskBatch, TaskSampler
from metods_core.testing._common import BATCH, CONFIG_CHECKS, build_config, equal_fields, run_suite


def splits_of(sampler: TaskSampler) -> tuple[Split, ...]:
    """Return the splits ``sampler`` draws: train and test, and validation if it has one."""
    validation: tuple[Split, ...] = ("validation",) if sampler.has_validation_split() else ()
    return ("train", "test", *validation)


@dataclasses.dataclass
class Transition:
    """One batched environment step, as returned by ``BatchedEnv.step``."""

    observation: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor


def build_sampler(cls: type[TaskSampler], config: dict[str, Any], seed: int = 0) -> TaskSampler:
    """Build ``cls`` from config overrides after ``torch.manual_seed(seed)``.

    The caller's global RNG state is restored afterwards.
    """
    built = build_config(cls, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sampler = cls(built)  # type: ignore[call-arg]
    assert isinstance(sampler, TaskSampler), (
        f"{cls.__name__}(config) built a {type(sampler).__name__}, not a TaskSampler"
    )
    return sampler


def random_actions(space: gym.Space, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Draw ``batch`` uniform actions of a ``Discrete`` or bounded ``Box`` ``space``."""
    if isinstance(space, gym.spaces.Discrete):
        start, n = int(space.start), int(space.n)
        return torch.randint(start, start + n, (batch,), generator=generator)
    if isinstance(space, gym.spaces.Box):
        assert space.is_bounded("both"), f"the checks draw actions uniformly; {space} is unbounded"
        low = torch.as_tensor(space.low, dtype=torch.float32)
        high = torch.as_tensor(space.high, dtype=torch.float32)
        uniform = torch.rand((batch, *space.shape), generator=generator)
        return torch.minimum(low + (high - low) * uniform, high)
    raise AssertionError(f"the agent acts in Discrete or Box spaces, not {space}")


def run_random_lifetime(
    sampler: TaskSampler, split: Split = "train", seed: int = 0, env: BatchedEnv | None = None
) -> tuple[BatchedEnv, torch.Tensor, list[Transition]]:
    """Sample ``BATCH`` tasks and run ``lifetime_steps`` uniformly random steps in their env.

    ``env`` replaces the freshly built env (to run an existing one again from ``reset``).

    Returns:
        The env, the observations of ``reset`` and every step's transition.
    """
    if env is None:
        tasks = sampler.sample(BATCH, split, torch.Generator().manual_seed(seed))
        env = sampler.make_env(tasks)
    observation, _ = env.reset()
    generator = torch.Generator().manual_seed(seed + 1)
    transitions = []
    for _ in range(env.lifetime_steps):
        action = random_actions(env.single_action_space, env.num_envs, generator)
        observation_t, reward, terminated, truncated, _ = env.step(action)
        transitions.append(Transition(observation_t, reward, terminated, truncated))
    return env, observation, transitions


def check_construction(cls: type[TaskSampler], /, **config: Any) -> None:
    """The sampler builds from its config and exposes its spaces and ``lifetime_steps``."""
    sampler = build_sampler(cls, config)
    for name in ("observation_space", "action_space"):
        space = getattr(sampler, name, None)
        assert isinstance(space, gym.Space), f"{cls.__name__}.{name} is {space!r}, not a gym.Space"
    steps = getattr(sampler, "lifetime_steps", None)
    assert isinstance(steps, int) and steps > 0, (
        f"{cls.__name__}.lifetime_steps must be a positive int, got {steps!r}"
    )


def check_sample(cls: type[TaskSampler], /, **config: Any) -> None:
    """``sample(n, split, generator)`` gives a TaskBatch of ``n`` tasks of that split."""
    sampler = build_sampler(cls, config)
    for split in splits_of(sampler):
        tasks = sampler.sample(BATCH, split, torch.Generator().manual_seed(0))
        assert isinstance(tasks, TaskBatch), f"sample returned {type(tasks).__name__}"
        assert tasks.size == BATCH, f"sample({BATCH}, ...) gave a batch of size {tasks.size}"
        assert tasks.split == split, f"sample(..., {split!r}, ...) gave split {tasks.split!r}"
        assert isinstance(tasks.seed, int), f"TaskBatch.seed is {type(tasks.seed).__name__}"
        for field in dataclasses.fields(tasks):
            value = getattr(tasks, field.name)
            if isinstance(value, torch.Tensor):
                assert value.shape[:1] == (BATCH,), (
                    f"TaskBatch.{field.name} has shape {tuple(value.shape)}: batch it in dim 0"
                )


def check_env_shapes_and_dtypes(cls: type[TaskSampler], /, **config: Any) -> None:
    """The env matches the sampler; ``reset`` and ``step`` follow the batched vector API:
    observations ``(batch, *obs_shape)``, float rewards and bool flags ``(batch,)``."""
    sampler = build_sampler(cls, config)
    env = sampler.make_env(sampler.sample(BATCH, "train", torch.Generator().manual_seed(0)))
    assert isinstance(env, BatchedEnv), f"make_env returned {type(env).__name__}"
    assert env.num_envs == BATCH, f"env.num_envs is {env.num_envs}, expected {BATCH}"
    assert env.lifetime_steps == sampler.lifetime_steps, (
        f"env.lifetime_steps {env.lifetime_steps} != sampler.lifetime_steps "
        f"{sampler.lifetime_steps}"
    )
    assert env.single_observation_space == sampler.observation_space, (
        "env.single_observation_space differs from the sampler's observation_space"
    )
    assert env.single_action_space == sampler.action_space, (
        "env.single_action_space differs from the sampler's action_space"
    )
    obs_shape = (BATCH, *(sampler.observation_space.shape or ()))
    observation, info = env.reset()
    assert isinstance(info, dict), f"reset's info is {type(info).__name__}, not a dict"
    assert isinstance(observation, torch.Tensor) and tuple(observation.shape) == obs_shape, (
        f"reset's observation has shape {tuple(getattr(observation, 'shape', ()))}, "
        f"expected {obs_shape}"
    )
    generator = torch.Generator().manual_seed(1)
    for t in range(min(3, env.lifetime_steps)):
        result = env.step(random_actions(env.single_action_space, BATCH, generator))
        assert len(result) == 5, f"step returned {len(result)} values, expected 5"
        observation, reward, terminated, truncated, info = result
        assert tuple(observation.shape) == obs_shape, (
            f"step {t}: observation shape {tuple(observation.shape)}, expected {obs_shape}"
        )
        assert reward.shape == (BATCH,) and reward.is_floating_point(), (
            f"step {t}: reward must be float ({BATCH},), got {reward.dtype} {tuple(reward.shape)}"
        )
        for name, flag in (("terminated", terminated), ("truncated", truncated)):
            assert flag.shape == (BATCH,) and flag.dtype == torch.bool, (
                f"step {t}: {name} must be bool ({BATCH},), got {flag.dtype} {tuple(flag.shape)}"
            )
        assert isinstance(info, dict), f"step {t}: info is {type(info).__name__}, not a dict"


def check_observations_in_space(cls: type[TaskSampler], /, **config: Any) -> None:
    """Every observation of a random lifetime lies in ``observation_space`` (bounds included);
    every reward is finite."""
    sampler = build_sampler(cls, config)
    space = sampler.observation_space
    _, first, transitions = run_random_lifetime(sampler)
    observations = [first] + [transition.observation for transition in transitions]
    for t, observation in enumerate(observations):
        for i, row in enumerate(observation):
            value = np.asarray(row.detach().cpu())
            assert space.contains(value), (
                f"{'reset' if t == 0 else f'step {t - 1}'}: task {i}'s observation is not in "
                f"{space} (min {value.min()}, max {value.max()}, dtype {value.dtype})"
            )
    for t, transition in enumerate(transitions):
        assert torch.isfinite(transition.reward).all(), f"step {t}: non-finite reward"


def check_lifetimes_end(cls: type[TaskSampler], /, **config: Any) -> None:
    """Within ``lifetime_steps`` steps every lifetime reports ``terminated`` or ``truncated``."""
    sampler = build_sampler(cls, config)
    _, _, transitions = run_random_lifetime(sampler)
    ended = torch.zeros(BATCH, dtype=torch.bool)
    for transition in transitions:
        ended = ended | transition.terminated | transition.truncated
    assert ended.all(), (
        f"after lifetime_steps = {sampler.lifetime_steps} random steps, tasks "
        f"{(~ended).nonzero().flatten().tolist()} never reported terminated or truncated"
    )


def check_lifetime_metrics(cls: type[TaskSampler], /, **config: Any) -> None:
    """``lifetime_metrics`` maps names to ``(batch,)`` or ``(batch, K)`` tensors and always has
    ``episode_reward`` ``(batch,)``, float and finite."""
    sampler = build_sampler(cls, config)
    env, _, _ = run_random_lifetime(sampler)
    metrics = env.lifetime_metrics()
    assert isinstance(metrics, dict), f"lifetime_metrics returned {type(metrics).__name__}"
    assert "episode_reward" in metrics, (
        f"lifetime_metrics has no 'episode_reward' (has {sorted(metrics)})"
    )
    for name, value in metrics.items():
        assert isinstance(value, torch.Tensor), f"metric {name!r} is {type(value).__name__}"
        assert value.dim() in (1, 2) and value.shape[0] == BATCH, (
            f"metric {name!r} has shape {tuple(value.shape)}, expected ({BATCH},) or ({BATCH}, K)"
        )
    reward = metrics["episode_reward"]
    assert reward.shape == (BATCH,) and reward.is_floating_point(), (
        f"episode_reward must be float ({BATCH},), got {reward.dtype} {tuple(reward.shape)}"
    )
    assert torch.isfinite(reward).all(), "non-finite episode_reward"


def check_splits_differ(cls: type[TaskSampler], /, **config: Any) -> None:
    """Any two splits (train, test, and validation if the sampler has one) drawn with equally
    seeded generators are different tasks."""
    sampler = build_sampler(cls, config)
    splits = splits_of(sampler)
    pairs = [(a, b) for i, a in enumerate(splits) for b in splits[i + 1 :]]
    for seed in range(3):
        for first, second in pairs:
            a = sampler.sample(BATCH, first, torch.Generator().manual_seed(seed))
            b = sampler.sample(BATCH, second, torch.Generator().manual_seed(seed))
            names = {field.name for field in dataclasses.fields(a)}
            skip = ("size", "split") + (("seed",) if names - {"size", "split", "seed"} else ())
            assert not equal_fields(a, b, skip=skip), (
                f"with generator seed {seed} the {first} and {second} splits drew the same tasks"
            )


def check_determinism(cls: type[TaskSampler], /, **config: Any) -> None:
    """The same seed gives the same tasks, and the same actions the same lifetimes."""
    runs = []
    for _ in range(2):
        sampler = build_sampler(cls, config, seed=0)
        tasks = sampler.sample(BATCH, "train", torch.Generator().manual_seed(0))
        runs.append((tasks, run_random_lifetime(sampler)))
    (tasks_a, (_, first_a, steps_a)), (tasks_b, (_, first_b, steps_b)) = runs
    assert equal_fields(tasks_a, tasks_b), "equally seeded generators drew different tasks"
    assert torch.equal(first_a, first_b), "the same tasks gave different reset observations"
    for t, (a, b) in enumerate(zip(steps_a, steps_b, strict=True)):
        for field in dataclasses.fields(Transition):
            assert torch.equal(getattr(a, field.name), getattr(b, field.name)), (
                f"step {t}: the same tasks and actions gave a different {field.name}"
            )


def _assert_same_lifetime(
    first: tuple[BatchedEnv, torch.Tensor, list[Transition]],
    second: tuple[BatchedEnv, torch.Tensor, list[Transition]],
    how: str,
) -> None:
    (_, first_a, steps_a), (_, first_b, steps_b) = first, second
    assert torch.equal(first_a, first_b), f"{how} gave different reset observations"
    for t, (a, b) in enumerate(zip(steps_a, steps_b, strict=True)):
        for field in dataclasses.fields(Transition):
            assert torch.equal(getattr(a, field.name), getattr(b, field.name)), (
                f"step {t}: {how} and the same actions gave a different {field.name}: seed the "
                "env's randomness from TaskBatch.seed in reset(), not in the constructor"
            )


def check_rebuilt_env_reproduces(cls: type[TaskSampler], /, **config: Any) -> None:
    """Two envs built from the same tasks, and one env reset twice, driven by the same actions,
    give identical lifetimes (replaying and population algorithms rely on it)."""
    sampler = build_sampler(cls, config)
    tasks = sampler.sample(BATCH, "train", torch.Generator().manual_seed(0))
    first = run_random_lifetime(sampler, env=sampler.make_env(tasks))
    second = run_random_lifetime(sampler, env=sampler.make_env(tasks))
    _assert_same_lifetime(first, second, "a second env built from the same tasks")
    again = run_random_lifetime(sampler, env=first[0])
    _assert_same_lifetime(first, again, "resetting the same env again")
    for env in (first[0], second[0]):
        env.close()


def check_repeated_tasks_share_randomness(cls: type[TaskSampler], /, **config: Any) -> None:
    """An env of ``tasks.repeat(3)`` driven by tiled actions gives tiled observations, rewards
    and flags: every copy of a task lives the same lifetime (common random numbers, on which
    population algorithms rely), and ``repeat`` records the copies."""
    copies = 3
    sampler = build_sampler(cls, config)
    tasks = sampler.sample(BATCH, "train", torch.Generator().manual_seed(0))
    tiled = tasks.repeat(copies)
    assert tiled.size == copies * tasks.size and tiled.copies == copies * tasks.copies, (
        f"repeat({copies}) of {tasks.size} tasks with copies={tasks.copies} gave size "
        f"{tiled.size} and copies={tiled.copies}"
    )
    env = sampler.make_env(tiled)
    generator = torch.Generator().manual_seed(1)

    def assert_tiled(value: torch.Tensor, what: str) -> None:
        blocks = value.reshape(copies, tasks.size, *value.shape[1:])
        for k in range(1, copies):
            assert torch.equal(blocks[k], blocks[0]), (
                f"{what}: copy {k} of the tiled tasks differs from copy 0 under the same actions; "
                "draw the env's random numbers for num_envs // tasks.copies envs and tile them"
            )

    observation, _ = env.reset()
    assert_tiled(observation, "reset observations")
    for t in range(env.lifetime_steps):
        action = random_actions(env.single_action_space, tasks.size, generator)
        action = action.repeat(copies, *([1] * (action.dim() - 1)))
        step = Transition(*env.step(action)[:4])
        for field in dataclasses.fields(Transition):
            assert_tiled(getattr(step, field.name), f"step {t}, {field.name}")
    env.close()


def check_global_rng_untouched(cls: type[TaskSampler], /, **config: Any) -> None:
    """Sampling tasks and running their env never draws from the global RNG."""
    sampler = build_sampler(cls, config)
    state = torch.get_rng_state()
    run_random_lifetime(sampler)
    assert torch.equal(torch.get_rng_state(), state), (
        "sample, make_env, reset or step drew from torch's global RNG: use the generator given "
        "to sample, or one seeded from TaskBatch.seed"
    )


def check_frozen_statistics(cls: type[TaskSampler], /, **config: Any) -> None:
    """After ``freeze_statistics``, a train-split lifetime leaves the sampler's state as it was.

    A sampler with state (``state_dict``, such as running observation statistics) may learn it
    from training lifetimes; meta-test freezes it, so that an evaluation on the train tasks sees
    the checkpoint's. Samplers without ``state_dict`` pass trivially.
    """
    sampler = build_sampler(cls, config)
    state_dict = getattr(sampler, "state_dict", None)
    if not callable(state_dict):
        return
    env, _, _ = run_random_lifetime(sampler)  # a training lifetime may change the state
    env.close()
    sampler.freeze_statistics()
    frozen = repr(state_dict())
    env, _, _ = run_random_lifetime(sampler, seed=1)
    env.close()
    assert repr(state_dict()) == frozen, (
        "a train-split lifetime changed the sampler's state after freeze_statistics(): "
        "meta-test on the train tasks would not see the checkpoint's statistics; make the "
        "envs built after freeze_statistics() leave the state alone"
    )


TASK_CHECKS: dict[str, Callable[..., None]] = {
    **CONFIG_CHECKS,
    "construction": check_construction,
    "sample": check_sample,
    "env_shapes_and_dtypes": check_env_shapes_and_dtypes,
    "observations_in_space": check_observations_in_space,
    "lifetimes_end": check_lifetimes_end,
    "lifetime_metrics": check_lifetime_metrics,
    "splits_differ": check_splits_differ,
    "determinism": check_determinism,
    "rebuilt_env_reproduces": check_rebuilt_env_reproduces,
    "repeated_tasks_share_randomness": check_repeated_tasks_share_randomness,
    "global_rng_untouched": check_global_rng_untouched,
    "frozen_statistics": check_frozen_statistics,
}
"""Every check of the task-sampler suite, by name: ``check(cls, **config)``."""


def check_task_sampler(cls: type[TaskSampler], /, **config: Any) -> None:
    """Run every check of ``TASK_CHECKS`` on ``cls``; raise one report of all failures.

    Args:
        cls: the task sampler's class.
        **config: overrides of ``cls.Config``'s defaults.

    Raises:
        AssertionError: one or more checks failed; the message lists each.
    """
    run_suite(f"task sampler {cls.__name__}", TASK_CHECKS, cls, **config)
