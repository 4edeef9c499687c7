"""Environment stepping alone: how fast a task sampler draws tasks and its batched env steps.

Run:  .venv/bin/python benchmarks/env_stepping.py [--recipe RECIPE.yaml] [--batch 64,256]

For each recipe and batch size B it builds the task sampler exactly as ``metods train`` does
(``create_task_sampler`` on the loaded recipe, ``data.batch_tasks=B``) and times, over
``--lifetimes`` lifetimes after ``--warmup`` untimed ones:

* *sample*: ``sampler.sample(B, "train", generator)`` — for the maze, B new Prim's mazes and
  goals, generated on the CPU once per outer step;
* *step*: ``make_env``, ``reset`` and ``lifetime_steps`` calls of ``env.step`` with uniformly
  random actions drawn on the device, no agent.

It reports environment steps per second (one task's step each) for stepping alone and for
sampling plus stepping, and the share of that time spent sampling. No network is involved, so
these are upper bounds on what training can reach; ``harlow_throughput.py --recipe ...`` times
whole outer steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import move_data_to_device

from metods_core.components import create_task_sampler
from metods_core.interfaces import BatchedEnv
from metods_core.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECIPES = [
    REPO / "recipes" / "maze" / "metods.yaml",
    REPO / "recipes" / "harlow" / "metods.yaml",
]


def parse_batches(text: str) -> list[int]:
    """Parse ``"64,256"`` into positive batch sizes."""
    try:
        batches = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 64,256, got {text!r}")
    return batches


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--recipe",
        type=Path,
        action="append",
        help="recipe whose task to time (repeatable; default: the maze and Harlow recipes)",
    )
    parser.add_argument("--batch", type=parse_batches, default=[64, 256], help="tasks per batch")
    parser.add_argument("--lifetimes", type=int, default=20, help="timed lifetimes per setting")
    parser.add_argument("--warmup", type=int, default=2, help="untimed lifetimes first")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe override for every recipe (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    return parser


def random_actions(env: BatchedEnv, generator: torch.Generator, device: str) -> torch.Tensor:
    """Return one uniformly random action per task, drawn on ``device``."""
    space = env.single_action_space
    if hasattr(space, "n"):
        return torch.randint(0, int(space.n), (env.num_envs,), generator=generator, device=device)
    low = torch.as_tensor(space.low, device=device)
    high = torch.as_tensor(space.high, device=device)
    unit = torch.rand((env.num_envs, *space.shape), generator=generator, device=device)
    return low + (high - low) * unit


def _sync(device: str) -> None:
    """Wait for queued CUDA work, so that the clock measures it."""
    if device == "cuda":
        torch.cuda.synchronize()


def measure(args: argparse.Namespace, recipe_path: Path, batch: int) -> dict[str, Any]:
    """Time task sampling and env stepping for one recipe at one batch size."""
    recipe = load_recipe(recipe_path, [*args.override, f"data.batch_tasks={batch}"])
    sampler = create_task_sampler(recipe)
    task_generator = torch.Generator().manual_seed(recipe.seed)
    action_generator = torch.Generator(device=args.device).manual_seed(recipe.seed)
    sample_seconds = step_seconds = 0.0
    for index in range(args.warmup + args.lifetimes):
        start = time.perf_counter()
        tasks = sampler.sample(batch, "train", task_generator)
        tasks = move_data_to_device(tasks, args.device)  # as Lightning moves each batch
        _sync(args.device)
        sampled = time.perf_counter()
        env = sampler.make_env(tasks)
        env.reset()
        for _ in range(sampler.lifetime_steps):
            env.step(random_actions(env, action_generator, args.device))
        _sync(args.device)
        stepped = time.perf_counter()
        if index >= args.warmup:
            sample_seconds += sampled - start
            step_seconds += stepped - sampled
    env_steps = batch * sampler.lifetime_steps * args.lifetimes
    return {
        "task": recipe.task.name,
        "recipe": str(recipe_path),
        "batch": batch,
        "lifetime_steps": sampler.lifetime_steps,
        "ms_sample": 1000 * sample_seconds / args.lifetimes,
        "ms_lifetime": 1000 * step_seconds / args.lifetimes,
        "env_steps_per_s": env_steps / step_seconds,
        "env_steps_per_s_with_sampling": env_steps / (sample_seconds + step_seconds),
        "sample_share": sample_seconds / (sample_seconds + step_seconds),
    }


COLUMNS = [  # (header, result key, format)
    ("task", "task", "{}"),
    ("batch", "batch", "{}"),
    ("steps per lifetime", "lifetime_steps", "{}"),
    ("sample ms", "ms_sample", "{:.1f}"),
    ("lifetime ms", "ms_lifetime", "{:.1f}"),
    ("env-steps/s", "env_steps_per_s", "{:,.0f}"),
    ("env-steps/s with sampling", "env_steps_per_s_with_sampling", "{:,.0f}"),
    ("sampling share", "sample_share", "{:.0%}"),
]


def table(results: list[dict[str, Any]]) -> str:
    """Return a markdown table of ``results``."""
    lines = [
        "| " + " | ".join(header for header, _, _ in COLUMNS) + " |",
        "|---|" + "---:|" * (len(COLUMNS) - 1),
    ]
    for result in results:
        lines.append("| " + " | ".join(fmt.format(result[key]) for _, key, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Time every recipe at every batch size and print one table."""
    args = build_parser().parse_args(argv)
    if args.lifetimes < 1 or args.warmup < 0 or args.threads < 1:
        sys.exit("--lifetimes and --threads must be at least 1, --warmup at least 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available to torch here")
    torch.set_num_threads(args.threads)
    results = [
        measure(args, recipe, batch)
        for recipe in (args.recipe or DEFAULT_RECIPES)
        for batch in args.batch
    ]
    print(
        f"Env stepping: {args.lifetimes} timed lifetimes after {args.warmup} warm-up, random "
        f"actions, device {args.device}, {args.threads} torch threads, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}).\n"
    )
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
