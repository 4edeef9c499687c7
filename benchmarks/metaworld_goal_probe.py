"""What does a trained ML1 reach policy go to: the hidden goal, or the train goal its puck names?

Run:  .venv/bin/python benchmarks/metaworld_goal_probe.py RUN_DIR [--goals 50] [--json]

A diagnostic, not a throughput figure. ML1 reach-v3 draws a puck position and a goal for every
task, and the puck is in the observation (columns 4-6) while the goal is not. A policy can thus
learn the 50 train goals by their pucks instead of searching with the reward. The probe runs
the run's last checkpoint (sampled actions with the same noise in both conditions, statistics
frozen as at meta-test) once on each of the first ``--goals`` train goals, in two conditions,
one after the other in one process:

* *own puck*: the benchmark's tasks as they are;
* *another goal's puck*: goal ``k`` with the puck of the next train goal ``j`` whose puck is at
  least 0.2 from goal ``k`` in the plane (Meta-World's reach reset loops forever on a puck
  within 0.15 of its goal).

For the first rollout of each lifetime (the hand's ``tcp_center`` at every step) it reports the
fraction of lifetimes whose hand came within Meta-World's 0.05 of the true goal (``success``),
of goal ``j`` (the goal the puck belongs to), and of every other train goal (the coverage a
goal-blind path gets by chance). A policy that searches with the reward is unmoved by the
swap; one that recognises train goals by their puck follows it to goal ``j``. The lifetimes are
shortened to two rollouts (``task.rollouts=2``) to halve the cost.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from metods_plugins.tasks.metaworld_tasks import MetaWorldML1Tasks

from metods_core.components import create_task_sampler
from metods_core.evaluation import load_trained_agent
from metods_core.rollout import run_lifetimes
from metods_core.training.checkpoints import find_resume_checkpoint, named_checkpoint
from metods_core.training.run_dir import read_run_recipe
from metods_core.training.seeding import derive_seed

SUCCESS_RADIUS = 0.05  # Meta-World reach-v3: success when the hand is within 5 cm of the goal
MIN_PUCK_TO_GOAL = 0.2  # reach-v3's reset needs more than 0.15 in the plane


def with_puck(task: Any, puck: np.ndarray) -> Any:
    """Return a copy of Meta-World ``task`` whose puck starts at ``puck`` ``(3,)``."""
    data = pickle.loads(task.data)
    data["rand_vec"] = np.concatenate([puck, data["rand_vec"][3:]])
    return type(task)(env_name=task.env_name, data=pickle.dumps(data))


def donors(rand_vecs: list[np.ndarray]) -> list[int]:
    """For each goal ``k``, the next goal ``j != k`` whose puck is far enough from goal ``k``."""
    n = len(rand_vecs)

    def far_enough(j: int, k: int) -> bool:
        return bool(np.linalg.norm(rand_vecs[j][:2] - rand_vecs[k][3:5]) >= MIN_PUCK_TO_GOAL)

    return [next(j for j in [*range(k + 1, n), *range(k)] if far_enough(j, k)) for k in range(n)]


def probe(run_dir: Path, goals: int) -> dict[str, Any]:
    """Return the reach fractions of both conditions (see the module doc) and
    ``path_shift``, the mean distance between the hand's positions at the same step under the
    two conditions (0 for a policy that cannot see the puck: ``task.observation=robot``)."""
    recipe = read_run_recipe(run_dir, ["task.rollouts=2"])
    sampler = create_task_sampler(recipe)
    if not isinstance(sampler, MetaWorldML1Tasks):
        raise SystemExit(f"{run_dir} is not a metaworld_ml1 run")
    checkpoint = find_resume_checkpoint(run_dir, named_checkpoint(run_dir, None))
    agent = load_trained_agent(recipe, sampler, checkpoint, run_dir)
    sampler.freeze_statistics()
    ids = [int(i) for i in sampler.split_ids["train"][:goals]]
    original = [sampler.tasks[i] for i in ids]
    rand_vecs = [pickle.loads(task.data)["rand_vec"] for task in original]
    goal_of = np.stack([vec[3:] for vec in rand_vecs])  # (goals, 3)
    donor = donors(rand_vecs)
    rollout_steps = sampler.config.rollout_steps
    results: dict[str, Any] = {}
    paths = []
    for condition, swap in (("own puck", False), ("another goal's puck", True)):
        for k in range(goals):
            puck = rand_vecs[donor[k] if swap else k][:3]
            sampler.tasks[ids[k]] = with_puck(original[k], puck)
        tasks = sampler.sample(goals, "train", torch.Generator().manual_seed(1))
        tasks.task_id = torch.tensor(ids)
        env = sampler.make_env(tasks)
        hands: list[np.ndarray] = []
        step = env.step

        def recording(
            action: torch.Tensor, step: Any = step, env: Any = env, hands: list[Any] = hands
        ) -> Any:
            out = step(action)
            hands.append(np.stack([simulator.tcp_center.copy() for simulator in env.simulators]))
            return out

        env.step = recording  # type: ignore[method-assign]
        generator = torch.Generator().manual_seed(derive_seed(recipe.seed, "actions", tasks.seed))
        with torch.no_grad():
            run_lifetimes(agent, env, generator)
        env.close()
        # The first rollout, before the boundary's reset moves the hand home: (steps, goals, 3).
        path = np.stack(hands)[: rollout_steps - 1]
        paths.append(path)
        nearest = np.linalg.norm(path[:, :, None] - goal_of[None, None], axis=3).min(axis=0)
        reached = nearest < SUCCESS_RADIUS  # (goals, goals): lifetime k came near goal m
        others = ~np.eye(goals, dtype=bool)
        others[np.arange(goals), donor] = False
        results[condition] = {
            "true goal k": float(reached[np.arange(goals), np.arange(goals)].mean()),
            "goal j": float(reached[np.arange(goals), donor].mean()),
            "other train goals": float(reached[others].mean()),
        }
        for k in range(goals):
            sampler.tasks[ids[k]] = original[k]
    results["path_shift"] = float(np.linalg.norm(paths[1] - paths[0], axis=2).mean())
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a metaworld_ml1 reach-v3 run folder")
    parser.add_argument("--goals", type=int, default=50, help="train goals probed (first N)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    results = probe(args.run_dir, args.goals)
    if args.json:
        print(json.dumps(results))
        return 0
    print("| puck of lifetime k | within 5 cm of: goal k (true) | goal j | other train goals |")
    print("|---|---:|---:|---:|")
    for condition in ("own puck", "another goal's puck"):
        row = results[condition]
        cells = " | ".join(f"{value:.2f}" for value in row.values())
        print(f"| {condition} | {cells} |")
    print(f"\nThe swap moved the hand by {100 * results['path_shift']:.2f} cm on average.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
