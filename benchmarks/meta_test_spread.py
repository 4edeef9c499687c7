"""How much does a meta-test's figure move with the evaluation's own seed?

Run:  .venv/bin/python benchmarks/meta_test_spread.py RUN_DIR [--checkpoint PATH] [--seeds 4]
      [--episodes N] [--split test] [--json]

A diagnostic of the evaluation, not of the agent. It meta-tests one checkpoint as ``metods
evaluate`` does (the recipe's ``evaluation`` settings, sampled or greedy actions as it says),
``--seeds`` times with different evaluation seeds (the recipe's seed, then 1, 2, ... added to
it), and prints the task's main metric under each seed, their mean and their standard
deviation. The standard deviation is how far two evaluations of the same policy disagree: a
difference between two agents smaller than it is not a difference the meta-test can see.

On Meta-World the held-out goals are a finite list, and which of them a meta-test meets is part
of that spread; ``TaskSampler.sample`` draws the test split in passes over the list, so a
meta-test of 50 lifetimes meets each of the 50 held-out goals once.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from metods_core.components import create_task_sampler
from metods_core.evaluation import load_trained_agent, meta_test
from metods_core.training.checkpoints import find_resume_checkpoint, named_checkpoint
from metods_core.training.run_dir import read_run_recipe


def spread(
    run_dir: Path,
    checkpoint: str | None = None,
    seeds: int = 4,
    episodes: int | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Return the main metric of ``seeds`` meta-tests of one checkpoint (``values``, one per
    evaluation seed), their ``mean`` and ``std`` (sample standard deviation), and the metric's
    name."""
    recipe = read_run_recipe(run_dir, [])
    sampler = create_task_sampler(recipe)
    path = find_resume_checkpoint(run_dir, named_checkpoint(run_dir, checkpoint))
    agent = load_trained_agent(recipe, sampler, path, run_dir)
    metric = sampler.main_metric()
    settings = recipe.evaluation
    episodes = settings.episodes if episodes is None else episodes
    values = []
    for offset in range(seeds):
        metrics = meta_test(
            agent,
            sampler,
            episodes,
            settings.batch_tasks,
            settings.greedy,
            recipe.seed + offset,
            split,  # type: ignore[arg-type]
        )
        values.append(float(metrics[metric].mean()))
    return {
        "checkpoint": str(path),
        "metric": metric,
        "episodes": episodes,
        "split": split,
        "values": values,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default=None, help="a checkpoint path; default: the last")
    parser.add_argument("--seeds", type=int, default=4, help="evaluation seeds (at least 2)")
    parser.add_argument("--episodes", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 to measure a spread")
    result = spread(args.run_dir, args.checkpoint, args.seeds, args.episodes, args.split)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['checkpoint']} ({result['split']}, {result['episodes']} lifetimes per seed)")
    cells = ", ".join(f"{value:.3f}" for value in result["values"])
    print(f"{result['metric']} by evaluation seed: {cells}")
    print(f"mean {result['mean']:.3f}, standard deviation {result['std']:.3f}")


if __name__ == "__main__":
    main()
