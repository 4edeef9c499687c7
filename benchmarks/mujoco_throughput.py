"""MuJoCo meta-training throughput beside its ceiling, pure simulation, on the same machine.

Run:  .venv/bin/python benchmarks/mujoco_throughput.py [--recipe R.yaml ...] [--rounds 3]

For each recipe (default: the shipped cheetah_dir and ant_dir MetODS recipes, at their own
``data.batch_tasks``) it alternates, ``--rounds`` times, side by side in one process:

* *simulation*: the sampler's simulators (``make_env`` from its pool), a seeded reset and
  ``lifetime_steps`` steps with uniformly random numpy actions: MuJoCo alone, the ceiling;
* *collection*: one lifetime per task collected by the recipe's agent, as every outer step
  begins (``OuterBatch.run_lifetimes`` without gradients, recording for a replay): the
  simulators plus the agent's acting, what a rollout-only loop would pay;
* *outer step*: one whole outer step of the recipe's meta-optimizer, as the training loop
  runs it (an ``OuterBatch``, sampling, the agent, the backward pass and the update);
* *build*: constructing a new vector env of ``batch_tasks`` simulators and closing it, which
  every outer step paid before simulators were pooled.

It prints env-steps/s (one task's step each) and the ratios outer step / simulation (the
factor by which training is slower than simulation) and collection / simulation. The recipe's
own ``trainer.compile`` applies (``--override trainer.compile=false`` for eager). One torch
thread; ratios, not absolute times, are what carries over between machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metods_core.components import create_agent, create_meta_optimizer, create_task_sampler
from metods_core.interfaces import OuterBatch
from metods_core.recipe import load_recipe
from metods_core.training.seeding import derive_seed

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECIPES = [
    REPO / "recipes" / "mujoco" / "cheetah_dir_metods.yaml",
    REPO / "recipes" / "mujoco" / "ant_dir_metods.yaml",
]


def measure(recipe_path: Path, rounds: int, overrides: list[str]) -> dict[str, Any]:
    """Return median seconds of each part over ``rounds`` interleaved repetitions."""
    recipe = load_recipe(recipe_path, overrides)
    torch.manual_seed(recipe.seed)
    sampler = create_task_sampler(recipe)
    agent = create_agent(recipe, sampler)
    meta_optimizer = create_meta_optimizer(recipe)
    optimizer = meta_optimizer.configure_optimizer(agent)
    batch = recipe.data.batch_tasks
    low, high = sampler.action_space.low, sampler.action_space.high
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {
        "simulation": [],
        "collection": [],
        "outer_step": [],
        "build": [],
    }
    for index in range(rounds + 1):  # round 0 warms up (builds the pooled simulators)
        tasks = sampler.sample(batch, "train", torch.Generator().manual_seed(index))
        start = time.perf_counter()
        env = sampler.make_env(tasks)
        env.reset()
        for _ in range(env.lifetime_steps):
            actions = rng.uniform(low, high, size=(batch, len(low))).astype(np.float32)
            env.simulators.step(actions)
        env.close()
        simulation = time.perf_counter() - start

        generator = torch.Generator().manual_seed(derive_seed(recipe.seed, "actions", index))
        collecting = OuterBatch(
            tasks, sampler.make_env, optimizer, lambda loss: loss.backward(), generator, index
        )
        start = time.perf_counter()
        with torch.no_grad():
            collecting.run_lifetimes(agent, record=True)
        collecting.close()
        collection = time.perf_counter() - start

        generator = torch.Generator().manual_seed(derive_seed(recipe.seed, "actions", index))
        outer = OuterBatch(
            tasks, sampler.make_env, optimizer, lambda loss: loss.backward(), generator, index
        )
        start = time.perf_counter()
        meta_optimizer.training_step(agent, outer)
        outer.close()
        outer_step = time.perf_counter() - start

        start = time.perf_counter()
        fns = [sampler.simulators.make_env for _ in range(batch)]
        gym.vector.SyncVectorEnv(fns).close()
        build = time.perf_counter() - start
        if index > 0:
            for name, value in zip(times, (simulation, collection, outer_step, build), strict=True):
                times[name].append(value)
    steps = batch * sampler.lifetime_steps
    result: dict[str, Any] = {
        "recipe": str(recipe_path.relative_to(REPO)),
        "batch": batch,
        "compile": recipe.trainer.compile,
    }
    for name, values in times.items():
        result[f"{name}_s"] = statistics.median(values)
    result["simulation_env_steps_per_s"] = steps / result["simulation_s"]
    result["collection_env_steps_per_s"] = steps / result["collection_s"]
    result["outer_env_steps_per_s"] = steps / result["outer_step_s"]
    result["collection_slowdown"] = result["collection_s"] / result["simulation_s"]
    result["slowdown"] = result["outer_step_s"] / result["simulation_s"]
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure every recipe and print a table (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, action="append", help="default: cheetah/ant dir")
    parser.add_argument("--rounds", type=int, default=3, help="timed repetitions (median)")
    parser.add_argument("--override", action="append", default=[], help="key=value")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [
        measure(r.resolve(), args.rounds, args.override) for r in args.recipe or DEFAULT_RECIPES
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        "| recipe | batch | compiled | simulation env-steps/s | collection env-steps/s | "
        "outer-step env-steps/s | collection / simulation time | outer / simulation time | "
        "building the simulators (s) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['recipe']} | {r['batch']} | {'yes' if r['compile'] else 'no'} | "
            f"{r['simulation_env_steps_per_s']:,.0f} | {r['collection_env_steps_per_s']:,.0f} | "
            f"{r['outer_env_steps_per_s']:,.0f} | {r['collection_slowdown']:.2f}x | "
            f"{r['slowdown']:.2f}x | {r['build_s']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
