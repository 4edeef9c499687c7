"""Meta-training throughput of the Harlow recipe, and of its plastic update alone.

Run:  .venv/bin/python benchmarks/harlow_throughput.py [--grid "64,20,1;64,20,4"] [--json out.json]
      .venv/bin/python benchmarks/harlow_throughput.py --recipe recipes/harlow/lstm.yaml \
          --grid "64,20"

For each (batch, N[, S]) setting it builds the agent exactly as ``metods train`` does (the recipe,
by default ``recipes/harlow/metods.yaml``, with ``data.batch_tasks=B agent.hidden=N``, and
``plasticity.recursion_steps=S`` when S is given and the recipe's rule has that field; other
rules ignore S and report it as ``null``) and times the meta-optimizer's ``training_step``:
task sampling, B lifetimes of 75 steps, backprop through them and one Adam step. Lightning's
own per-step overhead is left out. A second table times the rule's ``step`` alone, forward and
backward through one lifetime.

Every setting and part runs in its own fresh subprocess (``--single B,N,S --part outer|rule``,
which prints one JSON line), one after another: peak-memory high-water marks never mix, and
parallel runs would oversubscribe a 2-core machine and ruin the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = REPO / "recipes" / "harlow" / "metods.yaml"
DEFAULT_GRID = "64,20,1;64,20,4;256,20,1;256,20,4;64,64,4"
PARTS = ("outer", "rule")


Setting = tuple[int, int, int | None]


def parse_setting(text: str) -> Setting:
    """Parse ``"B,N,S"`` or ``"B,N"`` (batch of tasks, hidden size N, recursions S or None)."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) not in (2, 3) or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected B,N,S or B,N as positive integers, got {text!r}"
        )
    return (values[0], values[1], values[2] if len(values) == 3 else None)


def format_setting(setting: Setting) -> str:
    """Return ``"B,N,S"``, or ``"B,N"`` when S is None (the inverse of ``parse_setting``)."""
    return ",".join(str(value) for value in setting if value is not None)


def parse_grid(text: str) -> list[Setting]:
    """Parse ``"B,N,S;B,N"`` into a list of settings."""
    return [parse_setting(item) for item in text.split(";") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--grid",
        type=parse_grid,
        default=parse_grid(DEFAULT_GRID),
        help=f'settings "B,N,S;B,N" (S only if the rule has recursion_steps; "{DEFAULT_GRID}")',
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=20,
        help="timed outer steps (rule part: timed lifetimes) per setting",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in each run")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="recipe to build from")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe override, applied before the grid's (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--single",
        type=parse_setting,
        metavar="B,N[,S]",
        help="internal: measure one setting in this process, print one JSON line",
    )
    parser.add_argument("--part", choices=PARTS, default="outer", help="internal: with --single")
    return parser


# ---------------------------------------------------------------------------------------------
# One setting, in a fresh process
# ---------------------------------------------------------------------------------------------


def _max_rss_mb() -> float:
    """Return this process's peak resident set size in MiB (``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def setting_overrides(recipe_path: Path, extra: list[str], setting: Setting) -> list[str]:
    """Return the recipe overrides of ``setting``: B and N always; S only if given and the
    recipe's rule has a ``recursion_steps`` field (MetODS), else it is left out."""
    from metods_core.recipe import load_recipe

    batch, hidden, recursions = setting
    overrides = [*extra, f"data.batch_tasks={batch}", f"agent.hidden={hidden}"]
    if recursions is not None:
        rule_config = load_recipe(recipe_path, overrides).plasticity.config
        if "recursion_steps" in type(rule_config).model_fields:
            overrides.append(f"plasticity.recursion_steps={recursions}")
    return overrides


def effective_recursions(recipe: Any) -> int | None:
    """Return the loaded recipe's S, or None when its rule has no ``recursion_steps``."""
    return getattr(recipe.plasticity.config, "recursion_steps", None)


def build_setting(args: argparse.Namespace, setting: Setting) -> tuple[Any, Any, Any]:
    """Load the recipe with the setting's overrides; return (recipe, sampler, agent)."""
    import torch

    from metods_core.components import create_agent, create_task_sampler
    from metods_core.recipe import load_recipe

    recipe = load_recipe(args.recipe, setting_overrides(args.recipe, args.override, setting))
    torch.manual_seed(recipe.seed)
    sampler = create_task_sampler(recipe)
    agent = create_agent(recipe, sampler).to(args.device)
    return recipe, sampler, agent


def time_calls(args: argparse.Namespace, run_once: Any) -> tuple[float, float, float]:
    """Warm up, then time ``args.steps`` calls; return (seconds, baseline MiB, peak MiB)."""
    import torch

    cuda = args.device == "cuda"
    baseline = _max_rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated() / 2**20
    for index in range(args.warmup):
        run_once(index)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for index in range(args.warmup, args.warmup + args.steps):
        run_once(index)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _max_rss_mb()
    return seconds, baseline, peak


def outer_step_runner(recipe: Any, sampler: Any, agent: Any, device: str) -> tuple[Any, list[Any]]:
    """Return ``run_once(index)``, one outer step as the training loop does it, and the list
    that collects each step's ``env_steps`` metric.

    The one place the benchmarks call the meta-optimizer (``gpu_throughput.py`` uses it too):
    task sampling with the training loop's counter-based seeds, the move to the device, the
    environment, the meta-optimizer's ``training_step`` and the loop's finiteness check.
    """
    import torch
    from lightning.pytorch.utilities import move_data_to_device

    from metods_core.components import create_meta_optimizer
    from metods_core.interfaces import OuterBatch
    from metods_core.training.seeding import derive_seed

    meta_optimizer = create_meta_optimizer(recipe)
    optimizer = meta_optimizer.configure_optimizer(agent)
    batch = recipe.data.batch_tasks
    env_steps: list[torch.Tensor] = []

    def run_once(index: int) -> None:
        task_generator = torch.Generator().manual_seed(derive_seed(recipe.seed, "tasks", 0, index))
        tasks = sampler.sample(batch, "train", task_generator)
        tasks = move_data_to_device(tasks, device)  # as Lightning moves each batch
        generator = torch.Generator(device=device)
        generator.manual_seed(derive_seed(recipe.seed, "actions", tasks.seed))
        outer = OuterBatch(
            tasks, sampler.make_env, optimizer, lambda loss: loss.backward(), generator, step=index
        )
        metrics = meta_optimizer.training_step(agent, outer)
        outer.close()
        loss = metrics.get("loss")
        # The training loop's one host sync per outer step: its check for a diverged loss.
        if loss is not None and not bool(torch.isfinite(loss)):
            raise RuntimeError(f"the loss became {loss.item()} at step {index}")
        env_steps.append(metrics["env_steps"])

    return run_once, env_steps


def measure_outer(args: argparse.Namespace, setting: Setting) -> dict[str, Any]:
    """Time the meta-optimizer's outer steps, built and seeded as the training loop does."""
    import torch

    recipe, sampler, agent = build_setting(args, setting)
    run_once, collected = outer_step_runner(recipe, sampler, agent, args.device)
    batch = recipe.data.batch_tasks
    seconds, baseline, peak = time_calls(args, run_once)
    active = collected[args.warmup :]  # the timed steps' env_steps
    env_steps = batch * sampler.lifetime_steps * args.steps
    active_steps = float(torch.stack(active).sum()) if active else 0.0
    return {
        "S": effective_recursions(recipe),
        "rule": recipe.plasticity.name,
        "compile": recipe.trainer.compile,
        "lifetime_steps": sampler.lifetime_steps,
        "seconds": seconds,
        "env_steps_per_s": env_steps / seconds,
        "active_env_steps_per_s": active_steps / seconds,
        "active_fraction": active_steps / env_steps,
        "outer_steps_per_s": args.steps / seconds,
        "ms_per_outer_step": 1000 * seconds / args.steps,
        "peak_memory_mb": peak - baseline,
        "process_peak_mb": peak,
    }


def measure_rule(args: argparse.Namespace, setting: Setting) -> dict[str, Any]:
    """Time the plasticity rule's ``step`` alone: one lifetime forward, then backward."""
    import torch

    recipe, sampler, agent = build_setting(args, setting)
    rule, batch, steps = agent.rule, recipe.data.batch_tasks, sampler.lifetime_steps
    generator = torch.Generator(device=args.device).manual_seed(recipe.seed)
    # Encoder outputs are tanh activations: feed inputs of the same range.
    inputs = torch.tanh(
        torch.randn(steps, batch, recipe.agent.hidden, generator=generator, device=args.device)
    )

    def run_once(index: int) -> None:
        state = rule.init_state(batch)
        outputs = []
        for x in inputs:
            y, state = rule.step(x, state)
            outputs.append(y)
        rule.zero_grad(set_to_none=True)
        torch.stack(outputs).square().mean().backward()

    seconds, baseline, peak = time_calls(args, run_once)
    hidden, recursions = recipe.agent.hidden, effective_recursions(recipe)
    # Each recursion step writes all N x N synapses of every task once (one write: no S).
    synapses = batch * hidden * hidden * (recursions or 1) * steps * args.steps
    return {
        "S": recursions,
        "rule": recipe.plasticity.name,
        "compile": recipe.trainer.compile,
        "lifetime_steps": steps,
        "seconds": seconds,
        "synaptic_updates_per_s": synapses / seconds,
        "rule_steps_per_s": batch * steps * args.steps / seconds,
        "ms_per_lifetime": 1000 * seconds / args.steps,
        "peak_memory_mb": peak - baseline,
        "process_peak_mb": peak,
    }


def run_single(args: argparse.Namespace) -> None:
    """Measure ``args.single`` in this process and print one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available to torch here")
    measure = measure_outer if args.part == "outer" else measure_rule
    batch, hidden, recursions = args.single
    result = {"batch": batch, "N": hidden, "S": recursions, "part": args.part}
    result |= measure(args, args.single)
    result["torch"] = torch.__version__
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# The grid: one subprocess per setting and part, sequentially
# ---------------------------------------------------------------------------------------------


def run_child(args: argparse.Namespace, setting: Setting, part: str) -> dict:
    """Run one setting and part in a fresh interpreter; return its result or its error."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--single",
        format_setting(setting),
    ]
    for flag in ("part", "steps", "warmup", "threads", "device", "recipe"):
        command += [f"--{flag}", str(part if flag == "part" else getattr(args, flag))]
    for override in args.override:
        command += ["--override", override]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        return {"batch": setting[0], "N": setting[1], "S": setting[2], "part": part, "error": tail}
    return json.loads(lines[-1])


OUTER_COLUMNS = [  # (header, result key, format)
    ("env-steps/s", "env_steps_per_s", "{:,.0f}"),
    ("active env-steps/s", "active_env_steps_per_s", "{:,.0f}"),
    ("outer steps/s", "outer_steps_per_s", "{:.2f}"),
    ("ms per outer step", "ms_per_outer_step", "{:.1f}"),
    ("peak memory MB", "peak_memory_mb", "{:.1f}"),
    ("process peak MB", "process_peak_mb", "{:.0f}"),
]
RULE_COLUMNS = [
    ("synaptic updates/s", "synaptic_updates_per_s", "{:,.0f}"),
    ("rule steps/s", "rule_steps_per_s", "{:,.0f}"),
    ("ms per lifetime", "ms_per_lifetime", "{:.1f}"),
    ("peak memory MB", "peak_memory_mb", "{:.1f}"),
]


def table(title: str, results: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Return a markdown table of ``results``; a failed run gets a row that says so."""
    head = ["batch", "N", "S", *(header for header, _, _ in columns)]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for result in results:
        cells = [str(result["batch"]), str(result["N"]), str(result["S"] or "-")]
        if "error" in result:
            cells += ["failed"] + [""] * (len(columns) - 1)
        else:
            cells += [fmt.format(result[key]) for _, key, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the grid (or one ``--single`` setting) and print the tables."""
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        sys.exit("--steps and --threads must be at least 1, --warmup at least 0")
    if args.single is not None:
        run_single(args)
        return 0
    results: dict[str, list[dict]] = {part: [] for part in PARTS}
    for setting in args.grid:  # sequentially: parallel runs would share the cores
        for part in PARTS:
            print(f"running {part} B,N[,S]={format_setting(setting)}", file=sys.stderr, flush=True)
            results[part].append(run_child(args, setting, part))
    ok = [result for result in results["outer"] + results["rule"] if "error" not in result]
    lifetime = ok[0]["lifetime_steps"] if ok else "?"
    memory = "CUDA max allocated" if args.device == "cuda" else "peak RSS above baseline"
    print(
        f"Meta-training throughput of {args.recipe}: {args.steps} timed steps after "
        f"{args.warmup} warm-up, device "
        f"{args.device}, {args.threads} torch threads, torch {ok[0]['torch'] if ok else '?'}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
        f"peak memory MB: {memory}.\n"
    )
    title = f"Outer steps (meta-optimizer training_step, lifetimes of {lifetime} steps)"
    print(table(title, results["outer"], OUTER_COLUMNS) + "\n")
    title = f"Plastic update alone (rule.step over {lifetime} steps, forward + backward)"
    print(table(title, results["rule"], RULE_COLUMNS))
    failures = [result for result in results["outer"] + results["rule"] if "error" in result]
    for failure in failures:
        setting = f"{failure['batch']},{failure['N']},{failure['S'] or '-'}"
        print(f"\n{failure['part']} {setting} failed:\n{failure['error']}", file=sys.stderr)
    if args.json is not None:
        config = {key: getattr(args, key) for key in ("steps", "warmup", "threads", "device")}
        config |= {"grid": args.grid, "recipe": str(args.recipe), "override": args.override}
        args.json.write_text(json.dumps({"config": config, **results}, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
