"""Where one outer step of any recipe goes: collecting lifetimes, and learning from them.

Run:  .venv/bin/python benchmarks/outer_step_split.py RECIPE [key=value ...] [--steps 3]

Builds the recipe's task sampler, agent and meta-optimizer as ``metods train`` does (its own
``trainer.compile`` applies), then times ``--warmup`` untimed and ``--steps`` timed outer steps
(``MetaOptimizer.training_step`` on a fresh ``OuterBatch``, as the training loop calls it).
*Collection* is the time spent inside ``OuterBatch.run_lifetimes`` (the env and the agent
acting, without gradients for PPO); *learning* is the rest of the step: replays, backward
passes, optimizer steps. A meta-optimizer that collects without ``run_lifetimes`` (ES's
population) shows all of its step as learning. Lightning's loop, logging and checkpoints are
not included. One torch thread; medians over the timed steps; compare settings side by side in
one run (``--compare key=v1,v2``, or ``--setting 'k=v k2=v2'`` repeated for settings of several
fields), since absolute times on a shared machine drift.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from metods_core.components import create_agent, create_meta_optimizer, create_task_sampler
from metods_core.interfaces import OuterBatch
from metods_core.recipe import load_recipe
from metods_core.training.seeding import derive_seed


class _TimedBatch(OuterBatch):
    """An ``OuterBatch`` that adds the seconds spent in ``run_lifetimes`` to ``collection``."""

    collection: float = 0.0

    def run_lifetimes(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        lifetimes = super().run_lifetimes(*args, **kwargs)
        self.collection += time.perf_counter() - start
        return lifetimes


def measure(recipe_path: Path, overrides: list[str], steps: int, warmup: int) -> dict[str, Any]:
    """Return median seconds of collection, learning and the whole step, and env-steps/s."""
    recipe = load_recipe(recipe_path, overrides)
    torch.manual_seed(recipe.seed)
    sampler = create_task_sampler(recipe)
    agent = create_agent(recipe, sampler)
    meta_optimizer = create_meta_optimizer(recipe)
    optimizer = meta_optimizer.configure_optimizer(agent)
    batch = recipe.data.batch_tasks
    times: dict[str, list[float]] = {"collection": [], "learning": [], "total": []}
    for index in range(warmup + steps):
        tasks = sampler.sample(batch, "train", torch.Generator().manual_seed(index))
        generator = torch.Generator().manual_seed(derive_seed(recipe.seed, "actions", index))
        outer = _TimedBatch(
            tasks, sampler.make_env, optimizer, lambda loss: loss.backward(), generator, index
        )
        start = time.perf_counter()
        meta_optimizer.training_step(agent, outer)
        outer.close()
        total = time.perf_counter() - start
        if index >= warmup:
            times["collection"].append(outer.collection)
            times["learning"].append(total - outer.collection)
            times["total"].append(total)
    result: dict[str, Any] = {"recipe": str(recipe_path), "overrides": overrides, "batch": batch}
    result["compile"] = recipe.trainer.compile
    for name, values in times.items():
        result[f"{name}_s"] = statistics.median(values)
    result["env_steps_per_s"] = batch * sampler.lifetime_steps / result["total_s"]
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure the recipe (once, or once per ``--compare`` value) and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--steps", type=int, default=3, help="timed outer steps (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed outer steps (compiling)")
    parser.add_argument("--compare", metavar="key=v1,v2", help="one measurement per value")
    parser.add_argument(
        "--setting",
        action="append",
        metavar="'k=v k2=v2'",
        help="one measurement per --setting (several overrides each; repeat the option)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    torch.set_num_threads(1)
    variants = [[]]
    if args.compare:
        key, _, values = args.compare.partition("=")
        if not key or not values:
            parser.error("--compare takes key=v1,v2")
        variants = [[f"{key}={value}"] for value in values.split(",")]
    if args.setting:
        if args.compare:
            parser.error("use --compare or --setting, not both")
        variants = [setting.split() for setting in args.setting]
    results = [
        measure(args.recipe, [*args.overrides, *extra], args.steps, args.warmup)
        for extra in variants
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("| overrides | compiled | collection (s) | learning (s) | outer step (s) | env-steps/s |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {' '.join(r['overrides']) or '-'} | {'yes' if r['compile'] else 'no'} | "
            f"{r['collection_s']:.3f} | {r['learning_s']:.3f} | {r['total_s']:.3f} | "
            f"{r['env_steps_per_s']:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
