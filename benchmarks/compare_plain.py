"""Side by side: the shipped MetODS recipe against the plain reference (``plain_metods.py``).

Run:  .venv/bin/python benchmarks/compare_plain.py --settings "64,20,4;64,20,1" --pairs 5
      .venv/bin/python benchmarks/compare_plain.py --profile 64,20,4     # count the operators

For each setting B,N,S and each of ``--pairs`` pairs, two fresh interpreters run one after the
other: ``harlow_throughput.py --single B,N,S --part outer`` (the recipe as shipped, compiled if
the recipe says so; ``--override trainer.compile=false`` for eager) and ``plain_metods.py
--single B,N,S``, each timing ``--steps`` outer steps after ``--warmup``. The order alternates
from pair to pair (metods first, then plain first), so slow drifts of the machine's load fall
on both sides; the table gives each pair's env-steps/s, its ratio metods / plain, and the
median ratio, with the load average beside each pair. ``--profile`` counts, in this process,
the operators one eager outer step of each calls (torch.profiler), to check they do the same
batched matrix work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MATMULS = ("aten::bmm", "aten::mm", "aten::addmm", "aten::matmul", "aten::baddbmm", "aten::linear")


def run_json(command: list[str], nice: int) -> dict[str, Any]:
    """Run ``command`` (niced if allowed) in a fresh interpreter; return its last JSON line."""
    prefix = ["nice", "-n", str(nice)] if nice else []
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(prefix + command, capture_output=True, text=True, cwd=REPO, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": "\n".join(done.stderr.strip().splitlines()[-5:])}
    return json.loads(lines[-1])


def interleave(commands: dict[str, list[str]], pairs: int, nice: int) -> list[dict[str, Any]]:
    """Run each named command once per pair, alternating the order; return one row per pair."""
    rows = []
    names = list(commands)
    for index in range(pairs):
        order = names if index % 2 == 0 else names[::-1]
        row: dict[str, Any] = {"pair": index + 1, "first": order[0], "load_before": os.getloadavg()}
        for name in order:
            print(f"pair {index + 1}: {name}", file=sys.stderr, flush=True)
            row[name] = run_json(commands[name], nice)
        row["load_after"] = os.getloadavg()
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    """Add each pair's ratio a / b of env-steps/s and return the median (None if none ran)."""
    ratios = []
    for row in rows:
        if "error" not in row[a] and "error" not in row[b]:
            row["ratio"] = row[a]["env_steps_per_s"] / row[b]["env_steps_per_s"]
            ratios.append(row["ratio"])
    return {"median_ratio": statistics.median(ratios) if ratios else None, "ratios": ratios}


def pair_table(rows: list[dict[str, Any]], a: str, b: str) -> str:
    """Return a markdown table of the pairs: env-steps/s of each side, ratio, load average."""
    lines = [f"| pair | first | {a} env-steps/s | {b} env-steps/s | {a} / {b} | load 1-min |"]
    lines.append("|---:|---|---:|---:|---:|---:|")
    for row in rows:
        cells = [str(row["pair"]), row["first"]]
        for name in (a, b):
            cells.append(
                "failed" if "error" in row[name] else f"{row[name]['env_steps_per_s']:,.0f}"
            )
        cells.append(f"{row['ratio']:.2f}" if "ratio" in row else "-")
        cells.append(f"{row['load_before'][0]:.1f}-{row['load_after'][0]:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile(setting: str, overrides: list[str]) -> dict[str, dict[str, float]]:
    """Count operator calls per environment step of one eager outer step of each side."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    sys.path.insert(0, str(HERE))
    import harlow_throughput as bench
    import plain_metods as plain

    torch.set_num_threads(1)
    b, n, s = (int(part) for part in setting.split(","))
    args = bench.build_parser().parse_args(["--override", "trainer.compile=false"])
    args.override += overrides
    recipe, sampler, agent = bench.build_setting(args, (b, n, s))
    run_once, _ = bench.outer_step_runner(recipe, sampler, agent, "cpu")
    net, optimizer, plain_sampler, generator = plain.build((b, n, s))
    sides = {
        "metods": lambda: run_once(0),
        "plain": lambda: plain.outer_step(net, optimizer, plain_sampler, b, generator),
    }
    counts: dict[str, dict[str, float]] = {}
    for name, step in sides.items():
        step()  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        events = {event.key: event.count for event in prof.key_averages()}
        steps = sampler.lifetime_steps
        aten = sum(count for key, count in events.items() if key.startswith("aten::"))
        counts[name] = {key: events.get(key, 0) / steps for key in MATMULS}
        counts[name]["all aten ops"] = aten / steps
    return counts


def main(argv: list[str] | None = None) -> int:
    """Run the interleaved pairs (or ``--profile``) and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="64,20,4;64,20,1", help='"B,N,S;B,N,S"')
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "harlow" / "metods.yaml")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--nice", type=int, default=0, help="nice level of the runs (-5: root)")
    parser.add_argument("--profile", metavar="B,N,S", help="count operators instead of timing")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.profile:
        counts = profile(args.profile, args.override)
        print(f"Operator calls per environment step, one eager outer step, B,N,S={args.profile}")
        print("| operator | metods | plain |\n|---|---:|---:|")
        for key in counts["metods"]:
            print(f"| {key} | {counts['metods'][key]:.1f} | {counts['plain'][key]:.1f} |")
        if args.json:
            args.json.write_text(json.dumps(counts, indent=2) + "\n")
        return 0
    timing = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    timing += ["--threads", str(args.threads)]
    results: dict[str, Any] = {"config": {k: str(v) for k, v in vars(args).items()}}
    results["started"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for setting in [item.strip() for item in args.settings.split(";") if item.strip()]:
        metods = [sys.executable, str(HERE / "harlow_throughput.py"), "--single", setting]
        metods += ["--part", "outer", "--recipe", str(args.recipe), *timing]
        for override in args.override:
            metods += ["--override", override]
        plain = [sys.executable, str(HERE / "plain_metods.py"), "--single", setting, *timing]
        rows = interleave({"metods": metods, "plain": plain}, args.pairs, args.nice)
        summary = summarise(rows, "metods", "plain")
        results[setting] = {"pairs": rows, **summary}
        median = summary["median_ratio"]
        print(f"\n### B,N,S = {setting}: median metods / plain = {median and f'{median:.2f}'}\n")
        print(pair_table(rows, "metods", "plain"))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    failed = any(
        "error" in row[side]
        for k, v in results.items()
        if k not in ("config", "started")
        for row in v["pairs"]
        for side in ("metods", "plain")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
