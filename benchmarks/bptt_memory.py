"""Peak memory and time per outer step of full, checkpointed and truncated BPTT vs lifetime length.

Run:  .venv/bin/python benchmarks/bptt_memory.py [--lengths 75,300,1200,5000] [--batch 16]

Each measurement builds the Harlow recipe (``recipes/harlow/metods.yaml``, MetODS N = 20,
S = 4) with lifetimes of exactly T steps (``task.max_steps=T``, ``task.trials`` so large that
no lifetime ends early) and ``meta_optimizer.bptt.mode``/``chunk`` set, then times A2C's
``training_step`` as the training loop calls it (the same outer step as
``harlow_throughput.py``): task sampling with the loop's seeds, B lifetimes, backprop through
them, one Adam step, the loop's finiteness check. Every measurement runs in its own
fresh interpreter so that peak RSS is per mode, and the modes are interleaved (for each T and
each repeat: full, checkpointed, truncated, one after another) so that they share the
machine's conditions; with ``--repeats`` the median time is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = REPO / "recipes" / "harlow" / "metods.yaml"
MODES = ("full", "checkpointed", "truncated")
HIDDEN, RECURSIONS = 20, 4


def parse_positive_list(text: str) -> list[int]:
    """Parse ``"75,300"`` into positive integers."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def chunk_for(length: int, chunk: int | None) -> int:
    """Return the chunk length: ``chunk`` if given, else ceil(sqrt(T)) (the classic choice)."""
    return chunk if chunk is not None else math.ceil(math.sqrt(length))


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=parse_positive_list, default=[75, 300, 1200, 5000])
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated BPTT modes")
    parser.add_argument("--batch", type=int, default=16, help="tasks per outer step")
    parser.add_argument("--chunk", type=int, help="steps per chunk (default: ceil(sqrt(T)))")
    parser.add_argument("--steps", type=int, default=2, help="timed outer steps per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed outer steps first")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds per length")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each run")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="keep the recipe's torch.compile of the plastic update (default: off, because "
        "inductor's own memory would enter every mode's peak RSS)",
    )
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--single", metavar="T,MODE", help="internal: one measurement, JSON")
    return parser


def _max_rss_mb() -> float:
    """Return this process's peak resident set size in MiB (``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure_outer_steps(args: argparse.Namespace) -> dict[str, Any]:
    """Time ``args.steps`` outer steps after ``args.warmup``; return time and peak memory."""
    import torch
    from lightning.pytorch.utilities import move_data_to_device

    from metods_core.components import create_agent, create_meta_optimizer, create_task_sampler
    from metods_core.interfaces import OuterBatch
    from metods_core.recipe import load_recipe
    from metods_core.training.seeding import derive_seed

    overrides = [*args.override, f"data.batch_tasks={args.batch}", f"agent.hidden={HIDDEN}"]
    recipe = load_recipe(args.recipe, [*overrides, f"plasticity.recursion_steps={RECURSIONS}"])
    torch.manual_seed(recipe.seed)
    sampler = create_task_sampler(recipe)
    agent = create_agent(recipe, sampler).to(args.device)
    meta_optimizer = create_meta_optimizer(recipe)
    optimizer = meta_optimizer.configure_optimizer(agent)
    cuda = args.device == "cuda"

    def run_once(index: int) -> torch.Tensor:
        task_generator = torch.Generator().manual_seed(derive_seed(recipe.seed, "tasks", 0, index))
        tasks = move_data_to_device(
            sampler.sample(args.batch, "train", task_generator), args.device
        )
        generator = torch.Generator(device=args.device)
        generator.manual_seed(derive_seed(recipe.seed, "actions", tasks.seed))
        outer = OuterBatch(
            tasks, sampler.make_env, optimizer, lambda loss: loss.backward(), generator, step=index
        )
        metrics = meta_optimizer.training_step(agent, outer)
        outer.close()
        if not bool(torch.isfinite(metrics["loss"])):  # the training loop's one host sync
            raise RuntimeError(f"the loss became {metrics['loss'].item()} at step {index}")
        return metrics["env_steps"]

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated() / 2**20 if cuda else _max_rss_mb()
    for index in range(args.warmup):
        run_once(index)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    active = sum(float(run_once(i)) for i in range(args.warmup, args.warmup + args.steps))
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _max_rss_mb()
    return {
        "lifetime_steps": sampler.lifetime_steps,
        "ms_per_outer_step": 1000 * seconds / args.steps,
        "active_fraction": active / (args.batch * sampler.lifetime_steps * args.steps),
        "peak_memory_mb": peak - baseline,
        "process_peak_mb": peak,
    }


def run_single(args: argparse.Namespace) -> None:
    """Measure one (T, mode) in this process and print one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    length_text, mode = args.single.split(",")
    length = int(length_text)
    chunk = chunk_for(length, args.chunk)
    args.override = [
        *([] if args.compile else ["trainer.compile=false"]),
        *args.override,
        f"task.max_steps={length}",
        f"task.trials={length}",  # a presentation takes several steps: never all done early
        f"meta_optimizer.bptt.mode={mode}",
        f"meta_optimizer.bptt.chunk={chunk}",
    ]
    result = {"T": length, "mode": mode, "chunk": chunk, "batch": args.batch}
    result |= measure_outer_steps(args)
    result["torch"] = torch.__version__
    print(json.dumps(result))


def run_child(args: argparse.Namespace, length: int, mode: str) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; return its result or its error."""
    command = [sys.executable, str(Path(__file__).resolve()), "--single", f"{length},{mode}"]
    for flag in ("batch", "steps", "warmup", "threads", "device", "recipe"):
        command += [f"--{flag}", str(getattr(args, flag))]
    if args.chunk is not None:
        command += ["--chunk", str(args.chunk)]
    if args.compile:
        command.append("--compile")
    for override in args.override:
        command += ["--override", override]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        return {"T": length, "mode": mode, "error": tail or f"exit status {done.returncode}"}
    return json.loads(lines[-1])


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge repeats of one (T, mode): median time, largest peak memory."""
    ok = [run for run in runs if "error" not in run]
    if not ok:
        return runs[0]
    merged = dict(ok[0])
    merged["ms_per_outer_step"] = statistics.median(run["ms_per_outer_step"] for run in ok)
    merged["all_ms"] = [round(run["ms_per_outer_step"], 1) for run in ok]
    merged["peak_memory_mb"] = max(run["peak_memory_mb"] for run in ok)
    merged["process_peak_mb"] = max(run["process_peak_mb"] for run in ok)
    return merged


def table(results: list[dict[str, Any]]) -> str:
    """Return a markdown table, with memory and time relative to full BPTT at the same T."""
    head = "| T | mode | chunk | ms per outer step | peak memory MB | memory / full | time / full |"
    lines = [head, "|---:|---|---:|---:|---:|---:|---:|"]
    full = {r["T"]: r for r in results if r["mode"] == "full" and "error" not in r}
    for result in results:
        if "error" in result:
            lines.append(f"| {result['T']} | {result['mode']} | | failed | | | |")
            continue
        base = full.get(result["T"])
        memory = f"{result['peak_memory_mb'] / base['peak_memory_mb']:.3f}" if base else ""
        time = f"{result['ms_per_outer_step'] / base['ms_per_outer_step']:.2f}" if base else ""
        lines.append(
            f"| {result['T']} | {result['mode']} | {result['chunk']} "
            f"| {result['ms_per_outer_step']:.0f} | {result['peak_memory_mb']:.1f} "
            f"| {memory} | {time} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every (T, mode), interleaved, and print the table."""
    args = build_parser().parse_args(argv)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not modes or any(mode not in MODES for mode in modes):
        sys.exit(f"--modes: choose among {', '.join(MODES)}")
    if min(args.batch, args.steps, args.threads, args.repeats) < 1 or args.warmup < 0:
        sys.exit("--batch, --steps, --threads and --repeats must be at least 1, --warmup >= 0")
    if args.single is not None:
        run_single(args)
        return 0
    results = []
    for length in args.lengths:
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for repeat in range(args.repeats):
            for mode in modes:  # interleaved: the modes share the machine's conditions
                print(f"T={length} {mode} (round {repeat + 1})", file=sys.stderr, flush=True)
                runs[mode].append(run_child(args, length, mode))
        results += [summarise(runs[mode]) for mode in modes]
    memory = "CUDA max allocated" if args.device == "cuda" else "peak RSS above baseline"
    print(
        f"BPTT memory and time of {args.recipe} (A2C, MetODS N={HIDDEN} S={RECURSIONS}), "
        f"batch {args.batch}, {args.steps} timed steps after {args.warmup} warm-up, "
        f"{args.repeats} interleaved round(s) (median time), device {args.device}, "
        f"torch.compile {'on' if args.compile else 'off'}, "
        f"{args.threads} torch thread(s), {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}); peak memory: {memory}.\n"
    )
    print(table(results))
    failures = [result for result in results if "error" in result]
    for failure in failures:
        print(f"\nT={failure['T']} {failure['mode']} failed:\n{failure['error']}", file=sys.stderr)
    if args.json is not None:
        config = {k: getattr(args, k) for k in ("lengths", "batch", "chunk", "steps", "warmup")}
        config |= {"repeats": args.repeats, "threads": args.threads, "modes": modes}
        config |= {"compile": args.compile}
        config |= {"recipe": str(args.recipe), "override": args.override}
        args.json.write_text(json.dumps({"config": config, "results": results}, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
