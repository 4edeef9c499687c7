"""Where does an untrained Meta-World policy take the arm?

Run:  .venv/bin/python benchmarks/metaworld_initial_drift.py RECIPE [--seeds 0,1,2] [--goals 10]
      [--override key=value ...] [--json]

A diagnostic of the initialisation, not of training. For each seed it builds the recipe's agent
as ``metods train`` does (``seed_everything(seed)``, then the task sampler, then the agent),
runs one rollout on each of ``--goals`` train goals with sampled actions, and reports the hand's
mean displacement over the rollout (cm, x/y/z: a displacement shared by all goals is a push the
initialisation gives every lifetime, whatever the goal), its mean distance from the start, and
the return. Meta-World's v1 reach reward is clipped at zero once the hand is farther from the
goal than it started, so a policy that drives the arm away in every lifetime learns from
zeros. Compare ``--override readout.initial_mean_scale=0.01``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from metods_plugins.tasks.metaworld_tasks import MetaWorldML1Tasks, MetaWorldML10Tasks

from metods_core.components import create_agent, create_task_sampler
from metods_core.recipe import load_recipe
from metods_core.rollout import run_lifetimes


def initial_drift(
    recipe_path: Path, seed: int, goals: int = 10, overrides: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Return, for the untrained agent of ``recipe_path`` under ``seed``: ``mean_move_cm`` (the
    hand's displacement over one rollout, averaged over ``goals`` train goals, x/y/z),
    ``mean_distance_cm`` (the mean of each hand's distance from its start) and ``return``."""
    recipe = load_recipe(recipe_path, [f"seed={seed}", "task.rollouts=1", *overrides])
    L.seed_everything(seed, verbose=False)
    sampler = create_task_sampler(recipe)
    if not isinstance(sampler, MetaWorldML1Tasks | MetaWorldML10Tasks):
        raise SystemExit(f"{recipe_path} is not a Meta-World recipe")
    agent = create_agent(recipe, sampler)
    tasks = sampler.sample(goals, "train", torch.Generator().manual_seed(0))
    env = sampler.make_env(tasks)
    reset = env.reset
    starts: list[np.ndarray] = []

    def recording_reset() -> Any:
        out = reset()
        starts.append(np.stack([simulator.tcp_center.copy() for simulator in env.simulators]))
        return out

    env.reset = recording_reset  # type: ignore[method-assign]
    with torch.no_grad():
        lifetimes = run_lifetimes(agent, env, torch.Generator().manual_seed(1))
    ends = np.stack([simulator.tcp_center.copy() for simulator in env.simulators])
    env.close()
    move = ends - starts[0]  # (goals, 3) metres
    return {
        "seed": seed,
        "mean_move_cm": (move.mean(axis=0) * 100).round(1).tolist(),
        "mean_distance_cm": float(np.linalg.norm(move, axis=1).mean() * 100),
        "return": float(lifetimes.metrics["episode_reward"].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--goals", type=int, default=10, help="train goals, one rollout each")
    parser.add_argument("--override", action="append", default=[], help="key=value (repeat)")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    records = [initial_drift(args.recipe, s, args.goals, tuple(args.override)) for s in seeds]
    if args.json:
        print(json.dumps(records, indent=2))
        return
    for record in records:
        print(
            f"seed {record['seed']}: hand moved {record['mean_move_cm']} cm on average "
            f"(mean distance {record['mean_distance_cm']:.1f} cm), return {record['return']:.1f}"
        )


if __name__ == "__main__":
    main()
