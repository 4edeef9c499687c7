"""The Meta-World samplers: rollout boundaries, success semantics, the benchmark's splits, reuse
of simulators, the install hint (end to end: test_metaworld_training.py)."""

from __future__ import annotations

import importlib.util
import math
import sys
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from metods_plugins.tasks.metaworld_env import (
    MetaWorldBatchedEnv,
    MetaWorldSimulators,
    MetaWorldStepper,
)
from metods_plugins.tasks.metaworld_tasks import (
    INSTALL_HINT,
    MetaWorldML1Tasks,
    MetaWorldML10Tasks,
    MetaWorldTaskBatch,
)
from metods_plugins.tasks.mujoco_normalizer import RunningObservationNormalizer
from metods_plugins.tasks.simulator_workers import InProcessSteppers

from metods_core.errors import MetodsError

TINY = {"rollout_steps": 10, "rollouts": 2}
needs_metaworld = pytest.mark.skipif(
    importlib.util.find_spec("metaworld") is None,
    reason='needs the Meta-World extra: pip install "metods-plugins[metaworld]"',
)


class FakeSimulator:
    """Stands in for a Meta-World env: reports success on the steps listed in ``successes``
    (counted from its last reset) and rewards 1 per step."""

    def __init__(self, successes: set[int]) -> None:
        self.successes = successes
        self.t = 0
        self.resets = 0

    def set_task(self, task: Any) -> None:
        self.task = task

    def seed(self, seed: int) -> None:
        self.seed_value = seed

    def reset(self) -> tuple[np.ndarray, dict[str, Any]]:
        self.t, self.resets = 0, self.resets + 1
        return np.full(3, -1.0), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.t += 1
        return np.full(3, float(self.t)), 1.0, False, False, {"success": self.t in self.successes}


def fake_env(
    successes: list[set[int]],
    rollout_steps: int,
    rollouts: int,
    env_names: list[str] | None = None,
    class_names: tuple[str, ...] = (),
) -> MetaWorldBatchedEnv:
    simulators = iter([FakeSimulator(s) for s in successes])
    pool = MetaWorldSimulators(lambda name: next(simulators))
    space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    return MetaWorldBatchedEnv(
        steppers=InProcessSteppers(MetaWorldStepper(pool)),
        env_names=env_names or ["fake"] * len(successes),
        tasks=[None] * len(successes),
        seeds=[0] * len(successes),
        rollout_steps=rollout_steps,
        rollouts=rollouts,
        observation_space=space,
        action_space=gym.spaces.Box(-1.0, 1.0, (4,), np.float32),
        device=torch.device("cpu"),
        class_names=class_names,
    )


def test_success_is_any_step_of_a_rollout_and_boundaries_reset() -> None:
    """A rollout succeeds if success is reported at any of its steps (not only the last);
    ``success`` is the fraction of successful rollouts; at each rollout boundary the simulators
    restart and ``episode_boundary`` is set; only the last step is truncated."""
    # Task 0 succeeds at step 2 of each rollout only; task 1 at the rollout's last step (4) only;
    # task 2 never. With 3 rollouts of 4 steps each simulator restarts every 4 steps.
    env = fake_env([{2}, {4}, set()], rollout_steps=4, rollouts=3)
    first, _ = env.reset()
    assert torch.equal(first, torch.full((3, 3), -1.0))
    boundaries, truncations = [], []
    for t in range(env.lifetime_steps):
        observation, reward, terminated, truncated, info = env.step(torch.zeros(3, 4))
        boundaries.append(bool(info["episode_boundary"].all()))
        truncations.append(bool(truncated.all()))
        assert not terminated.any() and torch.equal(reward, torch.ones(3))
        expected = -1.0 if t in (3, 7) else float(t % 4 + 1)  # the next rollout's first obs
        assert torch.equal(observation, torch.full((3, 3), expected))
    assert boundaries == [False, False, False, True] * 3
    assert truncations == [False] * 11 + [True]
    assert [sim.resets for sim in env.simulators or []] == [3, 3, 3]
    metrics = env.lifetime_metrics()
    torch.testing.assert_close(metrics["success"], torch.tensor([1.0, 1.0, 0.0]))
    for k in range(3):
        torch.testing.assert_close(metrics[f"success/rollout_{k}"], torch.tensor([1.0, 1.0, 0.0]))
    assert metrics["success_by_rollout"].shape == (3, 3)
    torch.testing.assert_close(metrics["episode_reward"], torch.full((3,), 12.0))
    torch.testing.assert_close(metrics["return_by_rollout"], torch.full((3, 3), 4.0))


def test_success_rate_counts_rollouts_and_ignores_rollouts_not_started() -> None:
    """Success in one rollout of two gives 0.5; before the second rollout starts, only the
    first counts and the second rollout's entry is NaN."""
    env = fake_env([{5}], rollout_steps=3, rollouts=2)  # step 5 of a 3-step rollout: never
    env.reset()
    for _ in range(3):
        env.step(torch.zeros(1, 4))
    env.simulators[0].successes = {1}  # type: ignore[index]  # succeed in the second rollout
    partial = env.lifetime_metrics()
    assert partial["success"].item() == 0.0 and math.isnan(partial["success/rollout_1"].item())
    for _ in range(3):
        env.step(torch.zeros(1, 4))
    metrics = env.lifetime_metrics()
    assert metrics["success"].item() == 0.5
    assert metrics["success/rollout_0"].item() == 0.0 and metrics["success/rollout_1"].item() == 1


def test_success_per_class_is_each_class_lifetimes_and_nan_elsewhere() -> None:
    """Given class names (ML10), ``success/<class>`` is ``success`` on that class's lifetimes
    and NaN on the others, so its NaN-ignoring mean is the class's success rate; a class with no
    lifetime in the batch is all NaN. Without class names (ML1) no such metric appears."""
    classes = ("reach-v3", "push-v3", "door-open-v3")
    env = fake_env(
        [{1}, set(), set()],
        rollout_steps=2,
        rollouts=2,
        env_names=["reach-v3", "push-v3", "reach-v3"],
        class_names=classes,
    )
    env.reset()
    for t in range(env.lifetime_steps):
        if t == 2:  # the third lifetime succeeds in its second rollout only
            env.simulators[2].successes = {1}  # type: ignore[index]
        env.step(torch.zeros(3, 4))
    metrics = env.lifetime_metrics()
    torch.testing.assert_close(metrics["success"], torch.tensor([1.0, 0.0, 0.5]))
    nan = math.nan
    torch.testing.assert_close(
        metrics["success/reach-v3"], torch.tensor([1.0, nan, 0.5]), equal_nan=True
    )
    torch.testing.assert_close(
        metrics["success/push-v3"], torch.tensor([nan, 0.0, nan]), equal_nan=True
    )
    assert metrics["success/door-open-v3"].isnan().all()
    assert metrics["success/reach-v3"].nanmean().item() == 0.75
    plain = fake_env([{1}], rollout_steps=2, rollouts=1)
    plain.reset()
    plain.step(torch.zeros(1, 4))
    assert not [name for name in plain.lifetime_metrics() if "rollout" not in name and "/" in name]


def test_missing_metaworld_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ``metaworld`` package, building a sampler raises MetodsError with the install
    hint (importing the module does not need metaworld)."""
    monkeypatch.setitem(sys.modules, "metaworld", None)  # makes `import metaworld` fail
    for cls in (MetaWorldML1Tasks, MetaWorldML10Tasks):
        with pytest.raises(MetodsError, match=r"pip install \"metods-plugins\[metaworld\]\""):
            cls(cls.Config())
    assert INSTALL_HINT == 'pip install "metods-plugins[metaworld]"'


@needs_metaworld
def test_unknown_env_name_is_refused() -> None:
    with pytest.raises(MetodsError, match="not a Meta-World v3 task"):
        MetaWorldML1Tasks(MetaWorldML1Tasks.Config(env_name="reach-v1"))


def _reach_lifetime(env: MetaWorldBatchedEnv, steer: bool) -> None:
    """Run ``env``'s lifetime moving each hand towards its (hidden) goal, or standing still."""
    env.reset()
    for _ in range(env.lifetime_steps):
        action = torch.zeros(env.num_envs, 4)
        if steer:
            for i, sim in enumerate(env.simulators or []):
                direction = (sim._target_pos - sim.tcp_center) * 100
                action[i, :3] = torch.as_tensor(np.clip(direction, -1, 1), dtype=torch.float32)
        env.step(action)


@needs_metaworld
def test_reaching_the_hidden_goal_succeeds_in_every_rollout() -> None:
    """On real reach-v3 simulators, steering the hand to the goal succeeds in every rollout
    (each rollout restarts the arm); standing still never does. The goal is hidden: the
    observation's last three numbers are 0."""
    sampler = MetaWorldML1Tasks(MetaWorldML1Tasks.Config(rollout_steps=80, rollouts=2))
    tasks = sampler.sample(3, "test", torch.Generator().manual_seed(0))
    env = sampler.make_env(tasks)
    observation, _ = env.reset()
    assert torch.equal(observation[:, 36:], torch.zeros(3, 3))
    _reach_lifetime(env, steer=True)
    steered = env.lifetime_metrics()
    _reach_lifetime(env, steer=False)
    still = env.lifetime_metrics()
    env.close()
    assert steered["success_by_rollout"].tolist() == [[1.0, 1.0]] * 3
    assert still["success_by_rollout"].tolist() == [[0.0, 0.0]] * 3
    assert (steered["episode_reward"] > still["episode_reward"]).all()


@needs_metaworld
def test_v1_reward_is_scaled_and_pays_for_the_last_centimetres() -> None:
    """``reward_scale`` multiplies Meta-World's reward and leaves success alone; reach's v1
    reward, scaled by 0.004, rises steeply over the last centimetres (unlike v2, flat near
    its maximum there)."""
    lifetimes = {}
    for scale in (1.0, 0.004):
        config = MetaWorldML1Tasks.Config(
            rollout_steps=80, rollouts=1, reward_function_version="v1", reward_scale=scale
        )
        sampler = MetaWorldML1Tasks(config)
        env = sampler.make_env(sampler.sample(2, "test", torch.Generator().manual_seed(0)))
        _reach_lifetime(env, steer=True)
        lifetimes[scale] = (env.rewards.copy(), env.successes.copy())
        env.close()
    (raw, raw_success), (scaled, scaled_success) = lifetimes[1.0], lifetimes[0.004]
    np.testing.assert_allclose(scaled, raw * 0.004, rtol=1e-5)
    assert np.array_equal(raw_success, scaled_success) and scaled_success[:, -1].all()
    assert (scaled[:, 0] < 1.0).all() and (scaled[:, -1] > 8.0).all()
    at_success = scaled[scaled_success]
    assert at_success.min() > 4.0


@needs_metaworld
def test_robot_observation_is_the_hand_and_gripper_now_and_before() -> None:
    """``observation: robot`` gives the agent 8 numbers: the hand's position (the simulator's
    ``tcp_center`` up to Meta-World's hand offset) and the gripper's opening, then the same one
    step before; nothing of the puck, whose position differs between goals."""
    full = MetaWorldML1Tasks(MetaWorldML1Tasks.Config(rollout_steps=5, rollouts=1))
    robot = MetaWorldML1Tasks(
        MetaWorldML1Tasks.Config(rollout_steps=5, rollouts=1, observation="robot")
    )
    assert full.observation_space.shape == (39,)
    assert robot.observation_space.shape == (8,)
    tasks = full.sample(3, "train", torch.Generator().manual_seed(0))
    seen = []
    for sampler in (full, robot):
        env = sampler.make_env(tasks)
        generator = torch.Generator().manual_seed(2)
        observations = [env.reset()[0]]
        observations += [
            env.step(torch.rand(3, 4, generator=generator) * 2 - 1)[0] for _ in range(3)
        ]
        env.close()
        seen.append(torch.stack(observations))
    full_seen, robot_seen = seen
    columns = [0, 1, 2, 3, 18, 19, 20, 21]
    torch.testing.assert_close(robot_seen, full_seen[..., columns])
    # The previous step's hand and gripper are the last step's current ones.
    torch.testing.assert_close(robot_seen[1:, :, 4:], robot_seen[:-1, :, :4])
    # The puck (columns 4-6) differs between goals; the robot's start does not.
    assert not torch.allclose(full_seen[0, 0, 4:7], full_seen[0, 1, 4:7])
    torch.testing.assert_close(robot_seen[0, 0], robot_seen[0, 1])


@needs_metaworld
def test_ml1_splits_are_the_benchmarks_train_and_test_goals() -> None:
    """ML1's train split draws the benchmark's train goals, its test split the test goals."""
    import metaworld

    sampler = MetaWorldML1Tasks(MetaWorldML1Tasks.Config(env_name="push-v3", **TINY))
    benchmark = metaworld.ML1("push-v3", seed=0)
    for split, expected in (("train", benchmark.train_tasks), ("test", benchmark.test_tasks)):
        tasks = sampler.sample(20, split, torch.Generator().manual_seed(1))
        goals = {t.data for t in expected}
        assert all(sampler.tasks[int(i)].data in goals for i in tasks.task_id)
        assert set(sampler.task_names(tasks)) == {"push-v3"}


@needs_metaworld
def test_held_out_goals_are_drawn_in_passes_and_train_goals_independently() -> None:
    """The test split is drawn without replacement in passes over its 50 goals (a 50-lifetime
    meta-test meets each once; 120 lifetimes meet each 2 or 3 times); the train split is drawn
    with replacement."""
    sampler = MetaWorldML1Tasks(MetaWorldML1Tasks.Config(**TINY))
    test_ids = sampler.split_ids["test"]
    low, high = int(test_ids[0]), int(test_ids[-1]) + 1
    assert test_ids.tolist() == list(range(low, high))
    once = sampler.sample(50, "test", torch.Generator().manual_seed(4)).task_id
    assert sorted(once.tolist()) == list(range(low, high))
    more = sampler.sample(120, "test", torch.Generator().manual_seed(4)).task_id
    counts = torch.bincount(more - low, minlength=high - low)
    assert int(counts.min()) == 2 and int(counts.max()) == 3
    assert sorted(more[:50].tolist()) == list(range(low, high))
    train = sampler.sample(200, "train", torch.Generator().manual_seed(4)).task_id
    assert len(set(train[:50].tolist())) < 50  # independent draws repeat goals


@needs_metaworld
def test_without_validation_tasks_every_train_goal_is_trained_on() -> None:
    """``validation_tasks: 0`` (the default) keeps the benchmark's split as it is, and the train
    draws are the ones of a plain ``randint`` over the 50 train goals (runs reproduce)."""
    sampler = MetaWorldML1Tasks(MetaWorldML1Tasks.Config(**TINY))
    assert not sampler.has_validation_split()
    assert sampler.split_ids["train"].tolist() == list(range(50))
    drawn = sampler.sample(64, "train", torch.Generator().manual_seed(5)).task_id
    expected = torch.randint(0, 50, (64,), generator=torch.Generator().manual_seed(5))
    assert torch.equal(drawn, expected)
    with pytest.raises(ValueError, match="validation_tasks"):
        sampler.sample(4, "validation", torch.Generator().manual_seed(0))


@needs_metaworld
def test_validation_tasks_are_kept_out_of_training() -> None:
    """``validation_tasks: 10`` takes 10 of the 50 train goals, the same ones on every build:
    training never draws them, a 10-lifetime validation meta-test meets each once, and the
    test goals are unchanged."""
    plain = MetaWorldML1Tasks(MetaWorldML1Tasks.Config(**TINY))
    sampler = MetaWorldML1Tasks(MetaWorldML1Tasks.Config(**TINY, validation_tasks=10))
    again = MetaWorldML1Tasks(MetaWorldML1Tasks.Config(**TINY, validation_tasks=10))
    assert sampler.has_validation_split()
    held = sampler.split_ids["validation"]
    assert len(held) == 10 and torch.equal(held, again.split_ids["validation"])
    assert set(held.tolist()) | set(sampler.split_ids["train"].tolist()) == set(range(50))
    assert torch.equal(sampler.split_ids["test"], plain.split_ids["test"])
    train = sampler.sample(2000, "train", torch.Generator().manual_seed(1)).task_id
    assert set(train.tolist()) == set(sampler.split_ids["train"].tolist())
    once = sampler.sample(10, "validation", torch.Generator().manual_seed(2))
    assert sorted(once.task_id.tolist()) == held.tolist() and once.split == "validation"
    assert sampler.reported_classes("validation") == []  # one class: no per-class columns


@needs_metaworld
def test_validation_tasks_must_leave_a_train_task() -> None:
    """All 50 train goals as validation is refused with the largest allowed value."""
    with pytest.raises(MetodsError, match="at most 49"):
        MetaWorldML1Tasks(MetaWorldML1Tasks.Config(**TINY, validation_tasks=50))


@needs_metaworld
def test_simulators_are_built_once_and_reused() -> None:
    """A closed env gives its simulators back; the next env reuses them (set to the new tasks)
    and lives exactly the lifetime a fresh sampler's simulators would."""
    sampler = MetaWorldML1Tasks(MetaWorldML1Tasks.Config(rollout_steps=7, rollouts=2))
    tasks = sampler.sample(2, "train", torch.Generator().manual_seed(0))
    other = sampler.sample(2, "train", torch.Generator().manual_seed(5))

    def rewards(batch: MetaWorldTaskBatch) -> torch.Tensor:
        env = sampler.make_env(batch)
        env.reset()
        generator = torch.Generator().manual_seed(3)
        steps = [env.step(torch.rand(2, 4, generator=generator) * 2 - 1)[1] for _ in range(14)]
        env.close()
        return torch.stack(steps)

    first = rewards(tasks)
    built = sampler.simulators.built
    rewards(other)
    assert torch.equal(rewards(tasks), first)
    assert sampler.simulators.built == built


def test_normalised_observations_update_only_in_training() -> None:
    """With a normaliser, the agent sees normalised observations; a train env updates the
    statistics with every observation it gives (resets included), a test env never does."""
    normalizer = RunningObservationNormalizer(3)
    for update, expected_count in ((True, 2 * 5), (False, 2 * 5)):
        env = fake_env([set(), set()], rollout_steps=2, rollouts=2)
        env.normalizer, env.update_normalizer = normalizer, update
        seen = [env.reset()[0]]
        seen += [env.step(torch.zeros(2, 4))[0] for _ in range(4)]
        env.close()
        assert normalizer.count == expected_count
    # The fake simulators give -1 at a reset and t after step t: rows -1, 1, -1, 1, 2 per env.
    rows = np.array([-1.0, 1.0, -1.0, 1.0, 2.0])
    np.testing.assert_allclose(normalizer.mean, [rows.mean()] * 3)
    np.testing.assert_allclose(normalizer.var, [rows.var()] * 3)
    np.testing.assert_allclose(seen[-1].numpy(), normalizer(np.full((2, 3), 2.0)), rtol=1e-6)


@needs_metaworld
def test_normalizer_state_round_trips_and_is_off_by_default() -> None:
    """The sampler's statistics are its state (what checkpoints save); off by default."""
    assert MetaWorldML1Tasks(MetaWorldML1Tasks.Config(**TINY)).state_dict() == {}
    config = MetaWorldML1Tasks.Config(normalize_observations=True, **TINY)
    sampler = MetaWorldML1Tasks(config)
    env = sampler.make_env(sampler.sample(2, "train", torch.Generator().manual_seed(0)))
    env.reset()
    observation = env.step(torch.zeros(2, 4))[0]
    env.close()
    assert sampler.normalizer is not None and sampler.normalizer.count == 4
    assert observation.abs().max() <= sampler.normalizer.clip
    restored = MetaWorldML1Tasks(config)
    restored.load_state_dict(sampler.state_dict())
    assert restored.normalizer is not None and restored.normalizer.count == 4
    np.testing.assert_array_equal(restored.normalizer.mean, sampler.normalizer.mean)


@needs_metaworld
def test_statistics_steps_stop_the_statistics() -> None:
    """``statistics_steps``: training lifetimes stop updating the statistics once they hold
    that many observations (the reset's 2 here; the step's 2 are not merged)."""
    config = MetaWorldML1Tasks.Config(normalize_observations=True, statistics_steps=2, **TINY)
    sampler = MetaWorldML1Tasks(config)
    env = sampler.make_env(sampler.sample(2, "train", torch.Generator().manual_seed(0)))
    env.reset()
    assert sampler.normalizer is not None and sampler.normalizer.count == 2
    state = sampler.state_dict()
    env.step(torch.zeros(2, 4))
    env.close()
    assert sampler.state_dict() == state


def _lifetime(sampler: MetaWorldML1Tasks | MetaWorldML10Tasks, batch: MetaWorldTaskBatch) -> dict:
    """One lifetime of random actions (a fixed draw): observations, rewards and metrics."""
    env = sampler.make_env(batch)
    observations = [env.reset()[0]]
    generator = torch.Generator().manual_seed(3)
    rewards = []
    for _ in range(env.lifetime_steps):
        observation, reward, *_ = env.step(torch.rand(batch.size, 4, generator=generator) * 2 - 1)
        observations.append(observation)
        rewards.append(reward)
    metrics = env.lifetime_metrics()
    env.close()
    return {"observations": torch.stack(observations), "rewards": torch.stack(rewards), **metrics}


@needs_metaworld
@pytest.mark.parametrize("benchmark", ["ml1", "ml10"])
def test_worker_processes_give_the_same_lifetimes_to_the_bit(benchmark: str) -> None:
    """``task.workers: 2`` steps the batch in two worker processes (shares of 2 and 1 here);
    observations, rewards and success are those of the simulators stepped in this process,
    exactly, over two batches (the second reuses the workers' simulators), ML10's mixed task
    classes included."""
    cls = MetaWorldML1Tasks if benchmark == "ml1" else MetaWorldML10Tasks
    config = {"rollout_steps": 6, "rollouts": 2, "normalize_observations": True}
    in_process = cls(cls.Config(**config))
    in_workers = cls(cls.Config(**config, workers=2))
    try:
        for seed in (0, 1):
            batch = in_process.sample(3, "train", torch.Generator().manual_seed(seed))
            expected, got = _lifetime(in_process, batch), _lifetime(in_workers, batch)
            assert expected.keys() == got.keys()
            for name, value in expected.items():
                torch.testing.assert_close(got[name], value, rtol=0, atol=0, equal_nan=True)
        assert in_process.steppers().count == 1 and in_workers.steppers().count == 2
    finally:
        in_workers.steppers().close()


@needs_metaworld
def test_simulators_in_workers_cannot_be_read_from_the_training_process() -> None:
    """Tools that read the simulators' state (the goal map) are told to use workers=0."""
    sampler = MetaWorldML1Tasks(MetaWorldML1Tasks.Config(**TINY, workers=1))
    env = sampler.make_env(sampler.sample(2, "train", torch.Generator().manual_seed(0)))
    try:
        with pytest.raises(MetodsError, match="task.workers=0"):
            _ = env.simulators
        env.close()
        assert env.simulators is None
    finally:
        sampler.steppers().close()
