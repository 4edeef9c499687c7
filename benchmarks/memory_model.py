"""Bytes saved for the backward pass per environment step, against B, N and S, eager and compiled.

Run:  .venv/bin/python benchmarks/memory_model.py --json memory.json
      .venv/bin/python benchmarks/memory_model.py --batches 16 --hidden 20 --recursions 1 \
          --modes eager --rss

Two measurements of one outer step of ``recipes/harlow/metods.yaml`` (A2C, full backprop through
the lifetime), each setting in a fresh interpreter:

- ``hooks``: ``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd saves for
  the backward (compiled graphs included: AOTAutograd saves its activations through the same
  mechanism); the bytes of distinct storages are summed over the step. One step at lifetime
  T = 75 and one at T = 150 (``task.max_steps``), and their difference / 75 is the bytes saved
  per environment step, free of everything per lifetime (parameters, optimizer state).
- ``rss`` (``--rss``): the rise of the process's peak RSS over one outer step, T = 150 minus
  T = 75 in separate processes, / 75: what the allocator really needed, inductor's buffers too.

Then a least-squares fit per mode: bytes/step = c1 B N^2 S + c0 B N^2 + d B N, and the saved
copies of a B x N x N float32 matrix per step, bytes / (4 B N^2).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def measure(setting: tuple[int, int, int], mode: str, method: str, length: int) -> dict:
    """One outer step at lifetime ``length`` in this process: bytes saved, or peak-RSS rise."""
    import torch

    sys.path.insert(0, str(HERE))
    import harlow_throughput as bench

    torch.set_num_threads(1)
    args = bench.build_parser().parse_args([])
    args.override = [f"trainer.compile={mode == 'compiled'}", f"task.max_steps={length}"]
    args.override.append(f"task.trials={length}")
    recipe, sampler, agent = bench.build_setting(args, setting)
    run_once, _ = bench.outer_step_runner(recipe, sampler, agent, "cpu")
    if method == "rss":
        run_once(0)  # compilation, optimizer state and allocator warm-up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run_once(1)
        return {"bytes": 1024 * (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)}
    run_once(0)
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run_once(1)
    return {"bytes": sum(storages.values()), "tensors": len(storages)}


def child(command: list[str]) -> dict[str, Any]:
    """Run ``command`` in a fresh interpreter; return its last JSON line or its error."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": "\n".join(done.stderr.strip().splitlines()[-3:])}
    return json.loads(lines[-1])


def per_step(
    setting: tuple[int, int, int], mode: str, method: str, lengths: list[int]
) -> dict[str, Any]:
    """Bytes per environment step of ``setting``: the two lifetimes' runs differenced."""
    runs = {}
    for length in lengths:
        command = [sys.executable, __file__, "--single", ",".join(map(str, setting))]
        command += ["--mode", mode, "--method", method, "--length", str(length)]
        runs[length] = child(command)
        if "error" in runs[length]:
            return {"error": runs[length]["error"]}
    delta = runs[lengths[1]]["bytes"] - runs[lengths[0]]["bytes"]
    b, n, _ = setting
    steps = lengths[1] - lengths[0]
    return {
        "bytes_per_step": delta / steps,
        "bnn_per_step": delta / steps / (4 * b * n * n),
        f"bytes_t{lengths[0]}": runs[lengths[0]]["bytes"],
        f"bytes_t{lengths[1]}": runs[lengths[1]]["bytes"],
    }


def fit(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Least squares of bytes/step on (B N^2 S, B N^2, B N); return the coefficients."""
    import torch

    ok = [row for row in rows if "error" not in row]
    if len(ok) < 3:
        return {}
    features = torch.tensor(
        [[r["B"] * r["N"] ** 2 * r["S"], r["B"] * r["N"] ** 2, r["B"] * r["N"]] for r in ok],
        dtype=torch.float64,
    )
    target = torch.tensor([r["bytes_per_step"] for r in ok], dtype=torch.float64)
    coef = torch.linalg.lstsq(features, target.unsqueeze(-1)).solution.squeeze(-1)
    residual = (features @ coef - target).abs() / target.abs().clamp(min=1)
    return {
        "c1_BN2S": float(coef[0]),
        "c0_BN2": float(coef[1]),
        "d_BN": float(coef[2]),
        "max_relative_residual": float(residual.max()),
    }


def ints(text: str) -> list[int]:
    """Parse ``"16,64"`` into positive integers."""
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    """Measure the grid (each run in a fresh interpreter), fit, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=ints, default=ints("16,64"))
    parser.add_argument("--hidden", type=ints, default=ints("20,64,128"))
    parser.add_argument("--recursions", type=ints, default=ints("1,4"))
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--rss", action="store_true", help="also difference the peak RSS")
    parser.add_argument("--lengths", type=ints, default=ints("75,150"), help="two lifetimes T")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--single", help="internal: B,N,S")
    parser.add_argument("--mode", default="eager")
    parser.add_argument("--method", default="hooks")
    parser.add_argument("--length", type=int, default=75)
    args = parser.parse_args(argv)
    if args.single:
        b, n, s = (int(part) for part in args.single.split(","))
        print(json.dumps(measure((b, n, s), args.mode, args.method, args.length)))
        return 0
    methods = ["hooks", "rss"] if args.rss else ["hooks"]
    rows, fits = [], {}
    for method in methods:
        for mode in args.modes.split(","):
            mode_rows = []
            for b in args.batches:
                for n in args.hidden:
                    for s in args.recursions:
                        print(f"{method} {mode} B={b} N={n} S={s}", file=sys.stderr, flush=True)
                        row = {"method": method, "mode": mode, "B": b, "N": n, "S": s}
                        row |= per_step((b, n, s), mode, method, args.lengths)
                        print(json.dumps(row), file=sys.stderr, flush=True)  # progress
                        mode_rows.append(row)
            rows += mode_rows
            fits[f"{method} {mode}"] = fit(mode_rows)
    print("| method | mode | B | N | S | bytes saved / env step | B·N² float32 copies / step |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        cells = [row["method"], row["mode"], str(row["B"]), str(row["N"]), str(row["S"])]
        if "error" in row:
            cells += ["failed", row["error"].splitlines()[-1][:60]]
        else:
            cells += [f"{row['bytes_per_step']:,.0f}", f"{row['bnn_per_step']:.1f}"]
        print("| " + " | ".join(cells) + " |")
    print("\n| method, mode | c1 (B·N²·S) | c0 (B·N²) | d (B·N) | max rel. residual |")
    print("|---|---:|---:|---:|---:|")
    for name, coef in fits.items():
        if coef:
            print(
                f"| {name} | {coef['c1_BN2S']:.1f} | {coef['c0_BN2']:.1f} | {coef['d_BN']:.1f} "
                f"| {coef['max_relative_residual']:.2f} |"
            )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "fits": fits}, indent=2) + "\n")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
