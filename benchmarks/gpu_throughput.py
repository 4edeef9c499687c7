"""Meta-training throughput and peak memory on a GPU over batch sizes, eager and compiled.

Run:  .venv/bin/python benchmarks/gpu_throughput.py [--device cuda] [--json out.json]
      .venv/bin/python benchmarks/gpu_throughput.py --device cpu --batches 64 --steps 2  (smoke)

For each task (Harlow, maze), mode (eager; ``compile``: ``torch.compile`` of the plastic update,
as ``trainer.compile`` does; ``reduce-overhead``: the same with CUDA graphs, CUDA only) and
batch size, a fresh subprocess builds MetODS (N = 20, S = 4 by default) from the task's recipe
and times whole outer steps through ``harlow_throughput.outer_step_runner`` (the same calls as
the training loop, without Lightning). Beside each row: the roofline of the plastic update per
env step, from B, N and S (see ``roofline``), against this device's copy bandwidth and matmul
throughput, measured here once (not datasheet figures).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harlow_throughput import REPO, build_setting, outer_step_runner, time_calls

RECIPES = {"harlow": REPO / "recipes/harlow/metods.yaml", "maze": REPO / "recipes/maze/metods.yaml"}
MODES = ("eager", "compile", "reduce-overhead")
BYTES = 4  # float32


def roofline(hidden: int, recursions: int, write: str) -> dict[str, float]:
    """Return FLOPs and bytes of the MetODS update per env step of one task (float32).

    Per recursion s = 1..S: the read ``W v`` is 2N² FLOPs, the write ``alpha * (v post^T)``
    scaled by ``beta_s^s`` is 3N², the sum over the s earlier W(l) 2sN² (a linear write adds the
    projection's 2N²). Training is taken as 3x the forward FLOPs (backward ~ 2x forward). Bytes:
    a fused forward must read W_{t-1} and write W_t (2 N²); BPTT also stores W(1..S) for the
    backward, which reads them and reads/writes each W(s)'s gradient: (4S + 2) N² in all.
    """
    n2, s = hidden * hidden, recursions
    extra = 2 * s * n2 if write == "linear" else 0
    forward = (s * s + 6 * s) * n2 + extra
    return {
        "flops_forward": forward,
        "flops_train": 3 * forward,
        "bytes_forward_min": 2 * n2 * BYTES,
        "bytes_train": (4 * s + 2) * n2 * BYTES,
    }


def measure_peaks(device: str, small: bool) -> dict[str, float]:
    """Measure this device's copy bandwidth (GB/s) and float32 matmul throughput (GFLOP/s)."""
    import torch

    def best(fn: Any, repeats: int = 5) -> float:
        times = []
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return min(times)

    elements = (16 if small else 256) * 2**20
    source = torch.ones(elements, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    copy_s = best(lambda: target.copy_(source))
    size = 512 if small else 8192
    a = torch.randn(size, size, device=device)
    a @ a
    matmul_s = best(lambda: a @ a)
    return {
        "copy_gbs": 2 * elements * BYTES / copy_s / 1e9,
        "matmul_gflops": 2 * size**3 / matmul_s / 1e9,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Time one (task, mode, batch) in this process; return its figures."""
    import torch

    torch.set_num_threads(args.threads)
    task, mode, batch = args.single.split(",")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available to torch here")
    settings = argparse.Namespace(
        recipe=RECIPES[task], device=args.device, warmup=args.warmup, steps=args.steps,
        override=["trainer.compile=false"],
    )  # fmt: skip
    recipe, sampler, agent = build_setting(settings, (int(batch), args.hidden, args.recursions))
    if mode != "eager":  # what create_agent does for trainer.compile, with the mode chosen here
        compile_mode = None if mode == "compile" else mode
        agent.rule.step = torch.compile(agent.rule.step, mode=compile_mode)
    run_once, _ = outer_step_runner(recipe, sampler, agent, args.device)

    def step(index: int) -> None:
        if mode == "reduce-overhead":  # a new iteration: earlier graph outputs may be reused
            torch.compiler.cudagraph_mark_step_begin()
        run_once(index)

    seconds, baseline, peak = time_calls(settings, step)
    env_steps = int(batch) * sampler.lifetime_steps * args.steps
    return {
        "task": task, "mode": mode, "batch": int(batch), "N": args.hidden, "S": args.recursions,
        "write": recipe.plasticity.config.write, "env_steps_per_s": env_steps / seconds,
        "ms_per_outer_step": 1000 * seconds / args.steps, "peak_memory_mb": peak - baseline,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
    }  # fmt: skip


def run_child(args: argparse.Namespace, task: str, mode: str, batch: int) -> dict[str, Any]:
    """Measure one setting in a fresh interpreter (memory high-water marks never mix)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--single", f"{task},{mode},{batch}"]
    for flag in ("device", "hidden", "recursions", "steps", "warmup", "threads"):
        command += [f"--{flag}", str(getattr(args, flag))]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        error = " | ".join(done.stderr.strip().splitlines()[-3:])
        return {"task": task, "mode": mode, "batch": batch, "error": error}
    return json.loads(lines[-1])


def table(results: list[dict[str, Any]], peaks: dict[str, float]) -> str:
    """Return the results as a markdown table with each row's roofline beside it."""
    head = ["task", "mode", "batch", "env-steps/s", "ms/outer step", "peak MB",
            "update GFLOP/s", "update GB/s", "roofline env-steps/s", "of roofline"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for row in results:
        cells = [row["task"], row["mode"], str(row["batch"])]
        if "error" in row:
            lines.append("| " + " | ".join([*cells, f"failed: {row['error'][:80]}"]) + " |")
            continue
        cost = roofline(row["N"], row["S"], row["write"])
        rate = row["env_steps_per_s"]
        bound = min(peaks["copy_gbs"] * 1e9 / cost["bytes_train"],
                    peaks["matmul_gflops"] * 1e9 / cost["flops_train"])  # fmt: skip
        gflops, gbs = rate * cost["flops_train"] / 1e9, rate * cost["bytes_train"] / 1e9
        cells += [f"{rate:,.0f}", f"{row['ms_per_outer_step']:.1f}",
                  f"{row['peak_memory_mb']:.0f}", f"{gflops:,.1f}", f"{gbs:,.1f}",
                  f"{bound:,.0f}", f"{rate / bound:.2%}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--batches", default="64,256,1024,4096,16384", help="batch sizes B")
    parser.add_argument("--tasks", default="harlow,maze", help=f"of {sorted(RECIPES)}")
    parser.add_argument("--modes", default=",".join(MODES), help=f"of {MODES}")
    parser.add_argument("--hidden", type=int, default=20, help="N (agent.hidden)")
    parser.add_argument("--recursions", type=int, default=4, help="S (recursion_steps)")
    parser.add_argument("--steps", type=int, default=10, help="timed outer steps per setting")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation) first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--single", help="internal: TASK,MODE,B measured in this process")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Measure every (task, mode, batch), print the table; exit 1 if any setting failed."""
    args = build_parser().parse_args(argv)
    if args.single:
        print(json.dumps(measure(args)))
        return 0
    tasks, modes = args.tasks.split(","), args.modes.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    if not set(tasks) <= set(RECIPES) or not set(modes) <= set(MODES) or min(batches) < 1:
        build_parser().error("--tasks, --modes or --batches names something unknown")
    if args.device == "cpu":
        modes = [mode for mode in modes if mode != "reduce-overhead"]  # CUDA graphs: CUDA only
    import torch

    torch.set_num_threads(args.threads)
    peaks = measure_peaks(args.device, small=args.device == "cpu")
    results = []
    for task in tasks:
        for mode in modes:
            for batch in batches:
                print(f"running {task} {mode} B={batch}", file=sys.stderr, flush=True)
                results.append(run_child(args, task, mode, batch))
    names = {row["device_name"] for row in results if "device_name" in row}
    print(f"MetODS N={args.hidden} S={args.recursions}, {args.steps} timed outer steps after "
          f"{args.warmup}, device {args.device} ({', '.join(sorted(names)) or '?'}), torch "
          f"{torch.__version__}; measured copy {peaks['copy_gbs']:,.1f} GB/s, float32 matmul "
          f"{peaks['matmul_gflops']:,.0f} GFLOP/s.\n")  # fmt: skip
    print(table(results, peaks))
    for kind, value in roofline(args.hidden, args.recursions, "vanilla").items():
        print(f"plastic update per env step (vanilla write): {kind} = {value:,}")
    if args.json is not None:
        args.json.write_text(json.dumps({"peaks": peaks, "results": results}, indent=2) + "\n")
    return 1 if any("error" in row for row in results) else 0


if __name__ == "__main__":
    sys.exit(main())
