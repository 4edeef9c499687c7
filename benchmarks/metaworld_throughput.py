"""Env-steps/s of the Meta-World batched env beside raw Meta-World stepping (the ceiling).

Three measurements on the same tasks, one process, one thread:

- ``raw``: the Meta-World simulators stepped in a plain Python loop with random numpy actions
  (what any batched wrapper costs at least);
- ``batched_env``: ``MetaWorldBatchedEnv`` stepped with random torch actions (tensors in and out,
  success and reward book-keeping, rollout resets); with ``--workers W``, its simulators step in
  W worker processes (``task.workers``), so above 1x the raw rate means the cores were used;
- ``collect`` (with ``--recipe``): a whole lifetime of the recipe's agent acting, as an outer
  step collects it (no learning).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/metaworld_throughput.py --batch 10 --steps 1000 --json
    OMP_NUM_THREADS=1 python benchmarks/metaworld_throughput.py \
        --recipe recipes/metaworld/ml1_reach_metods.yaml --steps 1000 [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from metods_plugins.tasks.metaworld_tasks import MetaWorldML1Tasks

from metods_core.components import create_agent, create_task_sampler
from metods_core.recipe import load_recipe
from metods_core.rollout import run_lifetimes


def measure(
    batch: int, steps: int, env_name: str, recipe: str | None, workers: int = 0
) -> dict[str, float]:
    """Return env-steps/s of each measurement for ``batch`` tasks and ``steps`` steps each
    (``workers``: the batched env's and the collection's ``task.workers``)."""
    torch.set_num_threads(1)
    config = MetaWorldML1Tasks.Config(env_name=env_name, rollout_steps=500, rollouts=10)
    sampler = MetaWorldML1Tasks(config)
    tasks = sampler.sample(batch, "train", torch.Generator().manual_seed(0))
    raw_env = sampler.make_env(tasks)
    raw_env.reset()  # builds nothing more: the simulators are set to their tasks
    simulators = raw_env.simulators or []
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for t in range(steps):
        for simulator in simulators:
            simulator.step(rng.uniform(-1, 1, 4).astype(np.float32))
        if (t + 1) % 500 == 0:
            for simulator in simulators:
                simulator.reset()
    raw = batch * steps / (time.perf_counter() - start)
    raw_env.close()
    if workers:
        sampler = MetaWorldML1Tasks(config.model_copy(update={"workers": workers}))
    env = sampler.make_env(tasks)
    env.reset()
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(torch.rand(batch, 4, generator=generator) * 2 - 1)
    batched = batch * steps / (time.perf_counter() - start)
    env.close()
    result = {"batch": batch, "steps": steps, "workers": workers, "raw_steps_per_s": raw}
    result["batched_env_steps_per_s"] = batched
    result["batched_over_raw"] = batched / raw
    if recipe is not None:
        lifetime = [f"task.rollout_steps={steps}", "task.rollouts=1", f"task.env_name={env_name}"]
        lifetime.append(f"task.workers={workers}")
        loaded = load_recipe(recipe, lifetime)
        recipe_sampler = create_task_sampler(loaded)
        agent = create_agent(loaded, recipe_sampler)
        recipe_env = recipe_sampler.make_env(
            recipe_sampler.sample(batch, "train", torch.Generator().manual_seed(0))
        )
        start = time.perf_counter()
        with torch.no_grad():
            run_lifetimes(agent, recipe_env, torch.Generator().manual_seed(1))
        result["collect_steps_per_s"] = batch * steps / (time.perf_counter() - start)
        recipe_env.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10, help="tasks stepped together")
    parser.add_argument("--steps", type=int, default=1000, help="steps per task")
    parser.add_argument("--env-name", default="reach-v3", help="the ML1 task class")
    parser.add_argument("--recipe", default=None, help="also time the recipe's agent collecting")
    parser.add_argument("--workers", type=int, default=0, help="task.workers of the batched env")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = measure(args.batch, args.steps, args.env_name, args.recipe, args.workers)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value:,.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
