"""Maze meta-training throughput at Miconi's backpropamine settings, interleaved with his code.

Run:  .venv/bin/python benchmarks/maze_throughput.py --pairs 5                 # ours only
      .venv/bin/python benchmarks/maze_throughput.py --miconi /path/to/simplemaze/maze.py

Ours: ``recipes/maze/metods.yaml`` with the rule switched to ``neuromodulated`` (backpropamine:
a plastic recurrent layer of 100 units, simple neuromodulation, trace clipped to 2 as in his
code), 30 tasks per outer step, lifetimes of 200 steps, an 11 x 11 grid (his ``msize``), the
recipe's A2C and compilation (``--override trainer.compile=false`` for eager); timed by
``harlow_throughput.py --single 30,100 --part outer`` in a fresh interpreter. Our agent also
has its encoder (a Linear of 100 units before the plastic layer), which his network has not.

His: the given file (Uber's ``simplemaze/maze.py``, patched to run on the CPU with one thread
and to print a JSON line of env-steps/s, see the README) run as ``PATH --bs 30 --hs 100
--eplen 200 --nbiter W+K --warmup W --timeit 1``: env steps = batch x steps per episode per
training iteration, timed over the K iterations after W warm-up ones. His code is never part of
this repository. The two run alternately (``compare_plain.interleave``), ``--pairs`` times, and
the table gives each pair's ratio ours / his and the median.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare_plain import interleave, pair_table, summarise  # noqa: E402

MICONI_SETTINGS = [
    "plasticity.name=neuromodulated",
    "plasticity.hidden_size=100",
    "plasticity.variant=simple",
    "plasticity.clip=2.0",
    "task.lifetime_steps=200",
    "task.size=11",
]


def main(argv: list[str] | None = None) -> int:
    """Time ours (and his, with ``--miconi``) in interleaved fresh processes; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--miconi", type=Path, help="path of his patched simplemaze/maze.py")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="timed outer steps (iterations)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--nice", type=int, default=0, help="nice level of the runs (-5: root)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    ours = [sys.executable, str(HERE / "harlow_throughput.py"), "--part", "outer"]
    ours += ["--single", f"{args.batch},{args.hidden}", "--threads", "1"]
    ours += ["--recipe", str(HERE.parent / "recipes" / "maze" / "metods.yaml")]
    ours += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    for override in [*MICONI_SETTINGS, f"plasticity.hidden_size={args.hidden}", *args.override]:
        ours += ["--override", override]
    commands = {"metods": ours}
    if args.miconi is not None:
        his = [sys.executable, str(args.miconi.resolve()), "--bs", str(args.batch)]
        his += ["--hs", str(args.hidden), "--eplen", "200", "--pe", "1000000000"]
        his += ["--nbiter", str(args.warmup + args.steps), "--warmup", str(args.warmup)]
        commands["miconi"] = his + ["--timeit", "1"]
    results: dict[str, Any] = {"config": {k: str(v) for k, v in vars(args).items()}}
    results["started"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    rows = interleave(commands, args.pairs, args.nice)
    results["pairs"] = rows
    if args.miconi is not None:
        results |= summarise(rows, "metods", "miconi")
        median = results["median_ratio"]
        print(
            f"\n### Maze, B = {args.batch}, hidden {args.hidden}, 200 steps: median ours / "
            f"Miconi = {median and f'{median:.2f}'}\n"
        )
        print(pair_table(rows, "metods", "miconi"))
    else:
        for row in rows:
            print(json.dumps(row["metods"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any("error" in row[name] for row in rows for name in commands) else 0


if __name__ == "__main__":
    sys.exit(main())
