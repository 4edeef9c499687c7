"""Which ML1 reach goals does a trained policy miss, and by how much?

Run:  .venv/bin/python benchmarks/metaworld_goal_map.py RUN_DIR [--split test] [--rollouts 2]
      [--goals N] [--checkpoint PATH] [--statistics-from PATH] [--json]

A diagnostic, not a throughput figure. It runs the run's checkpoint (the last by default;
sampled actions, observation statistics frozen as at meta-test) once on each of the split's 50
goals (or its first ``--goals``), every lifetime shortened to ``--rollouts`` rollouts, and
records for each goal, from the hand's ``tcp_center`` at every step:

* ``success``: the fraction of the lifetime's rollouts with Meta-World's success (the metric of
  ``metods evaluate``);
* ``start_distance``: from the hand's position after the first reset to the goal;
* ``closest``: the hand's closest approach to the goal over the whole lifetime.

It prints the success and the closest approach by quartile of the start distance, and how
the missed goals were missed: a policy that searches with the reward but stops short misses by
a few centimetres; one whose path does not depend on the goal misses far ones by decimetres.
Meta-World's reach-v3 success radius is 5 cm.

``--statistics-from`` runs the policy with the observation statistics saved in another
checkpoint (``task.normalize_observations``): does a policy fail because its inputs moved?
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from metods_plugins.tasks.metaworld_tasks import MetaWorldML1Tasks

from metods_core.components import create_task_sampler
from metods_core.evaluation import load_trained_agent
from metods_core.rollout import run_lifetimes
from metods_core.training.checkpoints import (
    find_resume_checkpoint,
    named_checkpoint,
    read_checkpoint,
)
from metods_core.training.run_dir import read_run_recipe
from metods_core.training.seeding import derive_seed
from metods_core.training.task_state import restore_task_state

SUCCESS_RADIUS = 0.05  # Meta-World reach-v3: success when the hand is within 5 cm of the goal
MISS_BINS = (0.05, 0.10, 0.20)  # edges of the closest-approach bins of the missed goals (m)


def goal_map(
    run_dir: Path,
    split: str = "test",
    rollouts: int = 2,
    checkpoint: str | None = None,
    goals: int | None = None,
    statistics_from: Path | None = None,
) -> list[dict[str, Any]]:
    """Return one record per goal of ``split`` (its first ``goals``; all by default): ``goal``
    (x, y, z), ``start_distance``, ``closest`` (metres) and ``success`` (fraction of
    rollouts), in the benchmark's order. With ``statistics_from`` (a checkpoint), the policy
    sees observations normalised by that checkpoint's statistics instead of its own."""
    recipe = read_run_recipe(run_dir, [f"task.rollouts={rollouts}"])
    sampler = create_task_sampler(recipe)
    if not isinstance(sampler, MetaWorldML1Tasks):
        raise SystemExit(f"{run_dir} is not a metaworld_ml1 run")
    path = find_resume_checkpoint(run_dir, named_checkpoint(run_dir, checkpoint))
    agent = load_trained_agent(recipe, sampler, path, run_dir)
    if statistics_from is not None:
        restore_task_state(sampler, read_checkpoint(statistics_from))
    sampler.freeze_statistics()
    ids = sampler.split_ids[split][:goals]  # all of them when goals is None
    tasks = sampler.sample(len(ids), split, torch.Generator().manual_seed(1))  # type: ignore[arg-type]
    tasks.task_id = ids.clone()
    env = sampler.make_env(tasks)
    hands: list[np.ndarray] = []
    step = env.step

    def recording(action: torch.Tensor) -> Any:
        out = step(action)
        hands.append(np.stack([simulator.tcp_center.copy() for simulator in env.simulators]))
        return out

    env.step = recording  # type: ignore[method-assign]
    at_reset: dict[str, np.ndarray] = {}  # the hands and goals after run_lifetimes' reset
    reset = env.reset

    def recording_reset() -> Any:
        out = reset()
        at_reset["start"] = np.stack([simulator.tcp_center.copy() for simulator in env.simulators])
        at_reset["goal"] = np.stack([simulator._target_pos.copy() for simulator in env.simulators])
        return out

    env.reset = recording_reset  # type: ignore[method-assign]
    generator = torch.Generator().manual_seed(derive_seed(recipe.seed, "actions", tasks.seed))
    with torch.no_grad():
        lifetimes = run_lifetimes(agent, env, generator)
    env.close()
    start, goal = at_reset["start"], at_reset["goal"]
    path_of_hand = np.stack(hands)  # (steps, goals, 3)
    closest = np.linalg.norm(path_of_hand - goal[None], axis=2).min(axis=0)
    success = lifetimes.metrics["success"].numpy()
    return [
        {
            "goal": goal[k].round(4).tolist(),
            "start_distance": float(np.linalg.norm(goal[k] - start[k])),
            "closest": float(closest[k]),
            "success": float(success[k]),
        }
        for k in range(len(goal))
    ]


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Success and closest approach by quartile of the start distance; the missed goals
    (no successful rollout) by closest approach."""
    distance = np.array([r["start_distance"] for r in records])
    closest = np.array([r["closest"] for r in records])
    success = np.array([r["success"] for r in records])
    edges = np.quantile(distance, [0.0, 0.25, 0.5, 0.75, 1.0])
    quartiles = []
    for q in range(4):
        inside = (distance >= edges[q]) & (
            distance <= edges[q + 1] if q == 3 else distance < edges[q + 1]
        )
        quartiles.append(
            {
                "start_distance": [float(edges[q]), float(edges[q + 1])],
                "goals": int(inside.sum()),
                "success": float(success[inside].mean()),
                "closest_median": float(np.median(closest[inside])),
            }
        )
    missed = closest[success == 0]
    bounds = (0.0, *MISS_BINS, np.inf)
    misses = [
        {"closest": [float(a), float(b)], "goals": int(((missed >= a) & (missed < b)).sum())}
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return {
        "goals": len(records),
        "success": float(success.mean()),
        "by_start_distance": quartiles,
        "missed_by_closest_approach": misses,
    }


def _cm(metres: float) -> str:
    return "∞" if not np.isfinite(metres) else f"{100 * metres:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a metaworld_ml1 reach-v3 run folder")
    parser.add_argument("--split", choices=["train", "validation", "test"], default="test")
    parser.add_argument("--rollouts", type=int, default=2, help="rollouts per lifetime")
    parser.add_argument("--goals", type=int, help="only the split's first N goals (default: all)")
    parser.add_argument("--checkpoint", help="a checkpoint file, or 'best' (default: the last)")
    parser.add_argument(
        "--statistics-from", type=Path, help="a checkpoint whose observation statistics to use"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    records = goal_map(
        args.run_dir, args.split, args.rollouts, args.checkpoint, args.goals, args.statistics_from
    )
    summary = summarise(records)
    if args.json:
        print(json.dumps({"summary": summary, "goals": records}))
        return 0
    print(f"{summary['goals']} {args.split} goals, success {summary['success']:.2f}\n")
    print("| start distance (cm) | goals | success | closest approach, median (cm) |")
    print("|---|---:|---:|---:|")
    for row in summary["by_start_distance"]:
        low, high = row["start_distance"]
        print(
            f"| {_cm(low)}–{_cm(high)} | {row['goals']} | {row['success']:.2f} "
            f"| {_cm(row['closest_median'])} |"
        )
    print("\n| missed goals: closest approach (cm) | goals |")
    print("|---|---:|")
    for row in summary["missed_by_closest_approach"]:
        low, high = row["closest"]
        print(f"| {_cm(low)}–{_cm(high)} | {row['goals']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
