"""The MuJoCo task families: reward formulas, episode boundaries, impairment, install hint."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from metods_plugins.tasks.mujoco_env import MuJoCoBatchedEnv
from metods_plugins.tasks.mujoco_tasks import (
    INSTALL_HINT,
    AntDirTasks,
    CheetahDirTasks,
    CheetahVelTasks,
    MuJoCoTaskBatch,
)

from metods_core.errors import MetodsError
from metods_core.testing import check_task_sampler

SAMPLERS = {"cheetah_vel": CheetahVelTasks, "cheetah_dir": CheetahDirTasks, "ant_dir": AntDirTasks}
needs_mujoco = pytest.mark.skipif(
    importlib.util.find_spec("mujoco") is None,
    reason='needs the MuJoCo extra: pip install "metods-plugins[mujoco]"',
)


def make_env(
    cls: type, targets: list[float], reset_seed: int = 7, **config: Any
) -> MuJoCoBatchedEnv:
    """Build ``cls``'s env for tasks of the given targets, all from the same reset seed."""
    sampler = cls(cls.Config(**config))
    n = len(targets)
    tasks = MuJoCoTaskBatch(
        size=n,
        split="train",
        seed=0,
        target=torch.tensor(targets),
        reset_seeds=torch.full((n,), reset_seed, dtype=torch.long),
    )
    return sampler.make_env(tasks)


def random_actions(env: MuJoCoBatchedEnv, seed: int) -> torch.Tensor:
    dims = int(env.single_action_space.shape[0])
    return torch.rand(env.num_envs, dims, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def sub_envs(env: MuJoCoBatchedEnv) -> list[Any]:
    """Return the unwrapped Gymnasium MuJoCo environments of ``env``."""
    return [sub.unwrapped for sub in env.simulators.envs]


@needs_mujoco
@pytest.mark.parametrize("name", SAMPLERS)
def test_impaired_actuator_gets_exactly_zero_torque(name: str) -> None:
    """With ``impair_actuator=K`` the simulator's ``data.ctrl[K]`` is exactly 0 after every step
    while the other actuators get the agent's action; from the same state and actions the
    impaired robot moves differently from the intact one."""
    cls = SAMPLERS[name]
    impaired = make_env(cls, [1.0, 1.0], impair_actuator=2, episode_steps=10)
    intact = make_env(cls, [1.0, 1.0], episode_steps=10)
    first_impaired, _ = impaired.reset()
    first_intact, _ = intact.reset()
    assert torch.equal(first_impaired, first_intact)
    for t in range(3):
        action = random_actions(impaired, seed=t)
        observation_impaired, *_ = impaired.step(action)
        observation_intact, *_ = intact.step(action)
        for sub, row in zip(sub_envs(impaired), action, strict=True):
            assert sub.data.ctrl[2] == 0.0
            others = [k for k in range(len(row)) if k != 2]
            np.testing.assert_allclose(sub.data.ctrl[others], row[others].numpy(), rtol=1e-6)
        for sub, row in zip(sub_envs(intact), action, strict=True):
            np.testing.assert_allclose(sub.data.ctrl, row.numpy(), rtol=1e-6)
    assert not torch.allclose(observation_impaired, observation_intact)


@needs_mujoco
def test_impaired_actuator_out_of_range_is_refused() -> None:
    """An actuator index beyond the robot's actuators fails when the sampler is built."""
    with pytest.raises(MetodsError, match="has 6 actuators"):
        CheetahDirTasks(CheetahDirTasks.Config(impair_actuator=6))


def _expected_reward(
    name: str,
    sub: Any,
    target: float,
    xy_before: np.ndarray,
    action: Any,
    weights: dict[str, float] | None = None,
) -> float:
    """Recompute a step's reward from the simulator state, independently of Gymnasium's info;
    ``weights``: the recipe's reward weights (default: the v5 defaults)."""
    weights = weights or {}
    ctrl = weights.get("ctrl_cost_weight", 0.5 if name == "ant_dir" else 0.1)
    xy_after = sub.data.body("torso").xpos[:2].copy() if name == "ant_dir" else sub.data.qpos[:1]
    velocity = (xy_after - xy_before) / sub.dt
    squared = float(np.sum(np.square(action)))
    if name == "cheetah_vel":
        return -abs(velocity[0] - target) - ctrl * squared
    if name == "cheetah_dir":
        return target * velocity[0] - ctrl * squared
    healthy = (0.2 <= sub.state_vector()[2] <= 1.0) * weights.get("healthy_reward", 1.0)
    clipped = np.clip(sub.data.cfrc_ext, -1.0, 1.0)
    contact = weights.get("contact_cost_weight", 5e-4) * float(np.sum(np.square(clipped)))
    forward = math.cos(target) * velocity[0] + math.sin(target) * velocity[1]
    return forward + float(healthy) - ctrl * squared - contact


@needs_mujoco
@pytest.mark.parametrize(
    ("name", "targets", "weights"),
    [
        ("cheetah_vel", [0.0, 1.5, 3.0], {}),
        ("cheetah_dir", [1.0, -1.0, 1.0], {}),
        ("ant_dir", [0.0, math.pi / 2, 4.0], {}),
        ("cheetah_dir", [1.0, -1.0], {"ctrl_cost_weight": 0.5}),
        (
            "ant_dir",
            [0.0, 4.0],
            {"ctrl_cost_weight": 0.005, "healthy_reward": 0.05, "contact_cost_weight": 0.0},
        ),
    ],
)
def test_rewards_follow_the_task_formula(
    name: str, targets: list[float], weights: dict[str, float]
) -> None:
    """Rewards are cheetah_vel -|v_x - v*| - 0.1 |a|^2; cheetah_dir d v_x - 0.1 |a|^2; ant_dir
    cos(theta) v_x + sin(theta) v_y + healthy - 0.5 |a|^2 - contact cost; with the recipe's
    reward weights (``task.ctrl_cost_weight``, ...) where it sets them."""
    env = make_env(SAMPLERS[name], targets, episode_steps=10, **weights)
    env.reset()
    for t in range(4):
        before = [
            sub.data.body("torso").xpos[:2].copy()
            if name == "ant_dir"
            else sub.data.qpos[:1].copy()
            for sub in sub_envs(env)
        ]
        action = random_actions(env, seed=t)
        _, reward, *_ = env.step(action)
        expected = [
            _expected_reward(name, sub, target, xy, row.numpy(), weights)
            for sub, target, xy, row in zip(sub_envs(env), targets, before, action, strict=True)
        ]
        np.testing.assert_allclose(reward.numpy(), expected, rtol=1e-4, atol=1e-4)


@needs_mujoco
def test_episode_boundaries_within_a_lifetime() -> None:
    """With two episodes per lifetime, ``info["episode_boundary"]`` is set after each episode,
    the simulators restart at the first boundary while the lifetime goes on, and only the last
    step is ``truncated``."""
    env = make_env(CheetahDirTasks, [1.0, -1.0], episode_steps=5, episodes_per_lifetime=2)
    assert env.lifetime_steps == 10
    first, _ = env.reset()
    boundaries, truncations = [], []
    for t in range(env.lifetime_steps):
        observation, reward, terminated, truncated, info = env.step(random_actions(env, seed=t))
        boundaries.append(bool(info["episode_boundary"].all()))
        truncations.append(bool(truncated.all()))
        assert not terminated.any() and torch.isfinite(reward).all()
        assert info["episode_boundary"].dtype == torch.bool
        times = {round(float(sub.data.time) / sub.dt) for sub in sub_envs(env)}
        assert times == {0 if t == 4 else t % 5 + 1}  # the simulators restart at the boundary
        if t == 4:
            assert not torch.equal(observation, first)  # a fresh start, from later noise
    assert boundaries == [False] * 4 + [True] + [False] * 4 + [True]
    assert truncations == [False] * 9 + [True]
    metrics = env.lifetime_metrics()
    assert metrics["reward_curve"].shape == (2, 10)
    assert torch.isfinite(metrics["reward_curve"]).all()
    assert metrics["return_by_episode"].shape == (2, 2)
    torch.testing.assert_close(metrics["return_by_episode"].sum(1), metrics["episode_reward"])


@needs_mujoco
@pytest.mark.parametrize("name", SAMPLERS)
def test_conformance_with_several_episodes_and_impairment(name: str) -> None:
    """The samplers conform with two short episodes per lifetime and an impaired actuator."""
    check_task_sampler(SAMPLERS[name], episode_steps=6, episodes_per_lifetime=2, impair_actuator=0)


@needs_mujoco
@pytest.mark.parametrize("split", ["train", "test"])
def test_ant_forward_backward_draws_only_the_two_directions_along_x(split: str) -> None:
    """``directions: forward_backward`` draws theta 0 or pi, both, on either split; the
    default, ``plane``, draws angles all around the circle."""
    generator = torch.Generator().manual_seed(0)
    along_x = AntDirTasks(AntDirTasks.Config(directions="forward_backward"))
    theta = along_x.sample(64, split, generator).target
    assert set(theta.tolist()) == {0.0, float(torch.tensor(math.pi))}
    plane = AntDirTasks(AntDirTasks.Config()).sample(64, split, generator).target
    assert len(set(plane.tolist())) == 64
    assert float(plane.min()) < math.pi / 2 and float(plane.max()) > 3 * math.pi / 2


@needs_mujoco
def test_observations_are_float32_on_the_tasks_device() -> None:
    """Observations and rewards are float32 tensors on the device of the task batch."""
    env = make_env(AntDirTasks, [0.0, 1.0], episode_steps=3)
    observation, _ = env.reset()
    assert observation.dtype == torch.float32 and observation.shape == (2, 27)
    observation, reward, *_ = env.step(random_actions(env, seed=0))
    assert observation.dtype == torch.float32 and reward.dtype == torch.float32
    assert observation.device == reward.device == torch.device("cpu")


@pytest.mark.parametrize("name", SAMPLERS)
def test_missing_mujoco_gives_the_install_hint(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ``mujoco`` package, building a sampler raises MetodsError with the install
    hint (importing the module does not need mujoco)."""
    monkeypatch.setitem(sys.modules, "mujoco", None)  # makes `import mujoco` fail
    cls = SAMPLERS[name]
    with pytest.raises(MetodsError, match=r"pip install \"metods-plugins\[mujoco\]\""):
        cls(cls.Config())
    assert INSTALL_HINT == 'pip install "metods-plugins[mujoco]"'


@needs_mujoco
@pytest.mark.slow
def test_impairment_is_a_meta_test_override(tmp_path: Path) -> None:
    """A run trained intact is evaluated with ``task.impair_actuator=K``; the within-lifetime
    reward curve is reported."""
    from metods_core.evaluation import evaluate_run
    from metods_core.recipe import load_recipe
    from metods_core.training import train_recipe

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "mujoco" / "cheetah_dir_metods.yaml"
    overrides = [
        "task.episode_steps=8",
        "data.batch_tasks=2",
        "trainer.max_steps=1",
        "trainer.accelerator=cpu",
        "logger.wandb.mode=disabled",
        "agent.hidden=8",
        "trainer.compile=false",
    ]
    run_dir = train_recipe(load_recipe(recipe, overrides), tmp_path / "run")
    summary = evaluate_run(
        run_dir, episodes=4, overrides=["task.impair_actuator=3", "evaluation.batch_tasks=4"]
    )
    assert summary["overrides"][0] == "task.impair_actuator=3"
    assert len(summary["reward_curve"]) == 8
    assert math.isfinite(summary["mean_reward"])


def _lifetime_rewards(env: MuJoCoBatchedEnv, seed: int = 3) -> torch.Tensor:
    env.reset()
    rewards = [env.step(random_actions(env, seed + t))[1] for t in range(env.lifetime_steps)]
    return torch.stack(rewards)


@needs_mujoco
def test_simulators_are_built_once_and_reused() -> None:
    """A closed env gives its simulators back; the next env of that size reuses them and
    lives exactly the lifetimes that new simulators would."""
    sampler = CheetahDirTasks(CheetahDirTasks.Config(episode_steps=6, episodes_per_lifetime=2))
    tasks = sampler.sample(3, "train", torch.Generator().manual_seed(0))
    first = sampler.make_env(tasks)
    first_rewards = _lifetime_rewards(first)
    simulators = first.simulators
    first.close()
    second = sampler.make_env(tasks)
    assert second.simulators is simulators and sampler.simulators.built == 1
    assert torch.equal(_lifetime_rewards(second), first_rewards)
    fresh = CheetahDirTasks(sampler.config).make_env(tasks)
    assert torch.equal(_lifetime_rewards(fresh), first_rewards)
    other_size = sampler.make_env(sampler.sample(2, "train", torch.Generator().manual_seed(1)))
    assert sampler.simulators.built == 2
    for env in (second, fresh, other_size):
        env.close()
    with pytest.raises(RuntimeError, match="closed"):
        second.reset()
    sampler.simulators.close()


@needs_mujoco
@pytest.mark.slow
def test_async_simulators_give_the_same_lifetimes() -> None:
    """``vector_strategy=async`` steps worker processes and changes no number."""
    config = {"episode_steps": 5, "episodes_per_lifetime": 2}
    tasks = CheetahVelTasks(CheetahVelTasks.Config(**config)).sample(
        2, "train", torch.Generator().manual_seed(0)
    )
    results = []
    for strategy in ("sync", "async"):
        sampler = CheetahVelTasks(CheetahVelTasks.Config(**config, vector_strategy=strategy))
        env = sampler.make_env(tasks)
        results.append(_lifetime_rewards(env))
        env.close()
        sampler.simulators.close()
    assert torch.equal(results[0], results[1])


@needs_mujoco
@pytest.mark.slow
def test_throughput_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/mujoco_throughput.py measures both parts on a tiny lifetime."""
    import importlib.util as util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "mujoco_throughput.py"
    spec = util.spec_from_file_location("mujoco_throughput", path)
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recipe = path.parent.parent / "recipes" / "mujoco" / "cheetah_dir_metods.yaml"
    overrides = ["--override", "task.episode_steps=3", "--override", "data.batch_tasks=2"]
    overrides += ["--override", "trainer.compile=false"]
    assert module.main(["--recipe", str(recipe), "--rounds", "1", "--json", *overrides]) == 0
    import json

    (result,) = json.loads(capsys.readouterr().out)
    assert result["batch"] == 2 and result["outer_env_steps_per_s"] > 0
    assert result["slowdown"] > 0 and result["collection_slowdown"] > 0


def _lifetime_observations_and_rewards(env: MuJoCoBatchedEnv) -> torch.Tensor:
    observations = [env.reset()[0]]
    rewards = []
    for t in range(env.lifetime_steps):
        observation, reward, *_ = env.step(random_actions(env, 3 + t))
        observations.append(observation)
        rewards.append(reward)
    return torch.cat([torch.stack(observations).flatten(), torch.stack(rewards).flatten()])


@needs_mujoco
@pytest.mark.parametrize("sampler_class", [CheetahVelTasks, AntDirTasks])
def test_worker_processes_give_the_same_lifetimes_to_the_bit(sampler_class: type) -> None:
    """``workers: 2`` steps shares of 2 and 1 simulators in two worker processes: the
    observations (normalised) and rewards of lifetimes of two episodes are those of the
    in-process simulators exactly, for two task batches in turn (the second reuses the
    workers' simulators) and a meta-test batch of another size."""
    config = {"episode_steps": 4, "episodes_per_lifetime": 2, "normalize_observations": True}
    in_process = sampler_class(sampler_class.Config(**config))
    in_workers = sampler_class(sampler_class.Config(**config, workers=2))
    try:
        for seed, split, size in ((0, "train", 3), (1, "train", 3), (2, "test", 5)):
            batch = in_process.sample(size, split, torch.Generator().manual_seed(seed))
            lives = []
            for sampler in (in_process, in_workers):
                env = sampler.make_env(batch)
                lives.append(_lifetime_observations_and_rewards(env))
                env.close()
            assert torch.equal(lives[0], lives[1])
        assert in_workers.simulators.built == 2  # one per batch size, each lent again
    finally:
        in_process.simulators.close()
        in_workers.simulators.close()


def test_workers_and_async_are_not_both_chosen() -> None:
    with pytest.raises(ValueError, match="keep one"):
        CheetahDirTasks.Config(workers=2, vector_strategy="async")
