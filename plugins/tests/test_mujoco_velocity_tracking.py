"""benchmarks/mujoco_velocity_tracking.py: the velocity a MuJoCo policy runs at, per target."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
needs_mujoco = pytest.mark.skipif(
    importlib.util.find_spec("mujoco") is None,
    reason='needs the MuJoCo extra: pip install "metods-plugins[mujoco]"',
)


def _probe() -> ModuleType:
    path = ROOT / "benchmarks" / "mujoco_velocity_tracking.py"
    spec = importlib.util.spec_from_file_location("mujoco_velocity_tracking", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records(target: list[float], velocity: np.ndarray, speed_target: bool = True) -> dict:
    """Records of lifetimes with the given targets and per-step velocities."""
    return {
        "task": "cheetah_vel",
        "speed_target": speed_target,
        "checkpoint": "none",
        "target": np.asarray(target),
        "velocity": velocity,
        "episode_reward": -np.abs(velocity - np.asarray(target)[:, None]).sum(axis=1),
    }


def test_a_tracking_policy_has_slope_one_and_a_fixed_speed_slope_zero() -> None:
    """Velocity equal to the target: slope 1, intercept 0, r 1, no error. One fixed speed:
    slope 0, and its error is at least the best constant speed's."""
    probe = _probe()
    target = [0.0, 1.0, 2.0, 3.0]
    tracking = probe.summarise(_records(target, np.repeat(np.array(target)[:, None], 6, 1)), 2, 3)
    assert tracking["slope"] == pytest.approx(1.0) and tracking["intercept"] == pytest.approx(0.0)
    assert tracking["correlation"] == pytest.approx(1.0) and tracking["late_error"] == 0.0
    assert tracking["constant_speed_error"] == pytest.approx(1.0)  # median 1.5: |1.5 - v*|
    fixed = probe.summarise(_records(target, np.full((4, 6), 1.0)), 2, 3)
    assert fixed["slope"] == pytest.approx(0.0, abs=1e-12)
    assert fixed["late_error"] >= fixed["constant_speed_error"]
    assert [row["lifetimes"] for row in fixed["by_target"]] == [1, 1, 1, 1]


def test_directions_get_rows_and_no_fit() -> None:
    """A direction is not a speed: rows per direction, no slope and no error."""
    probe = _probe()
    velocity = np.array([[1.0, 2.0], [-1.0, 0.5], [3.0, 4.0]])
    summary = probe.summarise(_records([1.0, -1.0, 1.0], velocity, speed_target=False), 1, 1)
    assert summary["slope"] is None and summary["late_error"] is None
    rows = summary["by_target"]
    assert [row["mean_target"] for row in rows] == [-1.0, 1.0]
    assert [row["late_velocity"] for row in rows] == [0.5, 3.0]
    assert [row["early_velocity"] for row in rows] == [-1.0, 2.0]


@needs_mujoco
@pytest.mark.slow
def test_the_probe_meta_tests_as_evaluate_does_and_its_velocities_explain_the_reward(
    tmp_path: Path,
) -> None:
    """On a run trained for one step: the probe's lifetimes are ``metods evaluate``'s (same
    mean return), and every recorded velocity explains its step's reward on cheetah_vel,
    ``r = -|v_x - v*| - ctrl`` with ``0 <= ctrl <= 0.1 * 6`` (six actuators in [-1, 1])."""
    from metods_core.evaluation import evaluate_run
    from metods_core.recipe import load_recipe
    from metods_core.training import train_recipe

    recipe = ROOT / "recipes" / "mujoco" / "cheetah_vel_metods.yaml"
    overrides = [
        "task.episode_steps=8",
        "data.batch_tasks=2",
        "trainer.max_steps=1",
        "logger.wandb.mode=disabled",
        "agent.hidden=8",
        "trainer.compile=false",
        "evaluation.batch_tasks=3",
    ]
    run_dir = train_recipe(load_recipe(recipe, overrides), tmp_path / "run")
    probe = _probe()
    records = probe.record_velocities(run_dir, 5, None)
    assert records["target"].shape == (5,) and records["velocity"].shape == (5, 8)
    ctrl = -np.abs(records["velocity"] - records["target"][:, None]) - records["reward_curve"]
    assert ctrl.min() >= -1e-5 and ctrl.max() <= 0.6 + 1e-5, ctrl
    assert ctrl.max() > 0  # the actions cost something: the check is not vacuous
    summary = evaluate_run(run_dir, episodes=5)
    assert math.isclose(summary["mean_reward"], records["episode_reward"].mean(), rel_tol=1e-6)
    assert probe.summarise(records, 2, 4)["lifetimes"] == 5
