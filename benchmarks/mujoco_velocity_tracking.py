"""Does a trained MuJoCo policy adapt its speed to the task? Velocity against target, per lifetime.

Run:  .venv/bin/python benchmarks/mujoco_velocity_tracking.py RUN_DIR [--lifetimes 100]
          [--checkpoint PATH] [--early 20] [--late 100] [--json]

A diagnostic, not a throughput figure. A good mean return on ``cheetah_vel`` does not show
adaptation: one fixed speed near the middle of the targets' range already scores well. This
probe meta-tests the run's checkpoint exactly as ``metods evaluate`` does (the same held-out
tasks, action noise and frozen statistics, so its mean return is evaluate's ``mean_reward``)
and records at every step the velocity the task's reward reads:

* ``cheetah_vel``: the forward velocity ``v_x`` (target: the speed ``v*``);
* ``cheetah_dir``: ``target * v_x``, the speed in the rewarded direction;
* ``ant_dir``: ``cos(angle) v_x + sin(angle) v_y``, the speed along the target direction.

Per lifetime it keeps the target and the mean velocity over the first ``--early`` and the last
``--late`` steps. On ``cheetah_vel`` the summary fits the late velocity against the target
(least squares): a policy that tracks ``v*`` has slope 1 and intercept 0; one that runs at a
fixed speed has slope 0. ``late_error`` is the mean ``|v - v*|`` over the late steps, beside
``constant_speed_error``, the error of the best single speed for these targets (their median),
which a policy must beat to show any use of the reward. A direction is not a speed: on the
``*_dir`` tasks only the rows are reported. The ``by_target`` rows group the lifetimes in up
to 5 bins of target (one bin per value when there are at most 5 values, as cheetah_dir's two
directions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from metods_plugins.tasks.mujoco_env import MuJoCoBatchedEnv
from metods_plugins.tasks.mujoco_tasks import CheetahVelTasks, MuJoCoTaskBatch

from metods_core.components import create_task_sampler
from metods_core.evaluation import load_trained_agent, meta_test
from metods_core.training.checkpoints import find_resume_checkpoint, named_checkpoint
from metods_core.training.run_dir import read_run_recipe

MAX_BINS = 5


def record_velocities(run_dir: Path, lifetimes: int, checkpoint: str | None) -> dict[str, Any]:
    """Meta-test the run's checkpoint on ``lifetimes`` held-out tasks as ``metods evaluate``
    does; return ``target`` ``(lifetimes,)``, ``velocity`` ``(lifetimes, steps)`` (the task's
    velocity at every step), ``episode_reward`` ``(lifetimes,)``, ``reward_curve``
    ``(lifetimes, steps)`` and the task's name."""
    recipe = read_run_recipe(run_dir, [])
    sampler = create_task_sampler(recipe)
    if not callable(getattr(sampler, "task_velocity", None)):  # the MuJoCo families
        raise SystemExit(f"{run_dir} is not a cheetah_vel, cheetah_dir or ant_dir run")
    path = find_resume_checkpoint(run_dir, named_checkpoint(run_dir, checkpoint))
    agent = load_trained_agent(recipe, sampler, path, run_dir)
    targets: list[np.ndarray] = []
    velocities: list[list[np.ndarray]] = []  # per env built: one (batch,) array per step
    make_env = sampler.make_env

    def recording_make_env(tasks: MuJoCoTaskBatch) -> MuJoCoBatchedEnv:
        env = make_env(tasks)
        target = tasks.target.detach().cpu().double().numpy()
        steps: list[np.ndarray] = []
        reward_fn = env.reward_fn

        def recording_reward(info: dict[str, Any]) -> np.ndarray:
            steps.append(sampler.task_velocity(info, target))  # type: ignore[attr-defined]
            return reward_fn(info)

        env.reward_fn = recording_reward
        targets.append(target)
        velocities.append(steps)
        return env

    sampler.make_env = recording_make_env  # type: ignore[method-assign]
    evaluation = recipe.evaluation
    metrics = meta_test(
        agent, sampler, lifetimes, evaluation.batch_tasks, evaluation.greedy, recipe.seed
    )
    return {
        "task": recipe.task.name,
        "speed_target": isinstance(sampler, CheetahVelTasks),
        "checkpoint": str(path),
        "target": np.concatenate(targets),
        "velocity": np.concatenate([np.stack(steps, axis=1) for steps in velocities]),
        "episode_reward": metrics["episode_reward"].double().numpy(),
        "reward_curve": metrics["reward_curve"].double().numpy(),
    }


def summarise(records: dict[str, Any], early: int, late: int) -> dict[str, Any]:
    """Return the fit of late velocity on target, the errors and the ``by_target`` rows (see
    the module doc) of ``record_velocities``'s output."""
    target = records["target"]
    velocity = records["velocity"]
    early_velocity = velocity[:, :early].mean(axis=1)
    late_velocity = velocity[:, -late:].mean(axis=1)
    fit: dict[str, float | None] = dict.fromkeys(
        (
            "slope",
            "intercept",
            "correlation",
            "late_error",
            "constant_speed",
            "constant_speed_error",
        )
    )
    if records["speed_target"]:  # a direction's target is not a speed: no fit, no error
        constant = float(np.median(target))
        fit["late_error"] = float(np.abs(velocity[:, -late:] - target[:, None]).mean())
        fit["constant_speed"] = constant
        fit["constant_speed_error"] = float(np.abs(constant - target).mean())
        if np.ptp(target) > 0:
            slope, intercept = np.polyfit(target, late_velocity, 1)
            fit["slope"], fit["intercept"] = float(slope), float(intercept)
            fit["correlation"] = float(np.corrcoef(target, late_velocity)[0, 1])
    values = np.unique(target)
    if len(values) <= MAX_BINS:
        bins = np.searchsorted(values, target)
    else:
        edges = np.linspace(target.min(), target.max(), MAX_BINS + 1)
        bins = np.clip(np.searchsorted(edges, target, side="right") - 1, 0, MAX_BINS - 1)
    rows = []
    for index in np.unique(bins):
        chosen = bins == index
        rows.append(
            {
                "lifetimes": int(chosen.sum()),
                "mean_target": float(target[chosen].mean()),
                "early_velocity": float(early_velocity[chosen].mean()),
                "late_velocity": float(late_velocity[chosen].mean()),
                "mean_return": float(records["episode_reward"][chosen].mean()),
            }
        )
    return {
        "task": records["task"],
        "checkpoint": records["checkpoint"],
        "lifetimes": len(target),
        "steps": velocity.shape[1],
        "early_steps": early,
        "late_steps": late,
        "mean_return": float(records["episode_reward"].mean()),
        **fit,
        "by_target": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a cheetah_vel, cheetah_dir or ant_dir run")
    parser.add_argument("--lifetimes", type=int, default=100, help="held-out lifetimes")
    parser.add_argument("--checkpoint", default=None, help="'best' or a path (default: last)")
    parser.add_argument("--early", type=int, default=20, help="steps averaged at the start")
    parser.add_argument("--late", type=int, default=100, help="steps averaged at the end")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    summary = summarise(
        record_velocities(args.run_dir, args.lifetimes, args.checkpoint), args.early, args.late
    )
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{summary['task']}, {summary['lifetimes']} held-out lifetimes, {summary['checkpoint']}")
    print(f"mean return {summary['mean_return']:.1f}")
    if summary["slope"] is not None:
        print(
            f"late velocity = {summary['slope']:.2f} * target + {summary['intercept']:.2f} "
            f"(r = {summary['correlation']:.2f}); late |v - v*| {summary['late_error']:.2f}, "
            f"best constant speed {summary['constant_speed']:.2f} would give "
            f"{summary['constant_speed_error']:.2f}"
        )
    print(
        f"\n| target | lifetimes | velocity, first {args.early} steps | "
        f"velocity, last {args.late} steps | return |"
    )
    print("|---:|---:|---:|---:|---:|")
    for row in summary["by_target"]:
        print(
            f"| {row['mean_target']:.2f} | {row['lifetimes']} | {row['early_velocity']:.2f} | "
            f"{row['late_velocity']:.2f} | {row['mean_return']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
