"""The ``metods`` command line: its parser, and one exit status for every outcome.

What each subcommand does is in ``commands.py``, whose handlers import the heavy modules
(torch, Lightning, W&B) only when they run, so that ``metods --help`` answers at once. Every
``MetodsError``, and every ``OSError`` (a folder that is a file, read-only, full, not
permitted), ends as one ``error:`` message on stderr and exit status 2, never a traceback;
Ctrl+C during training saves the step reached and exits 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from metods_core import commands as handlers
from metods_core.errors import MetodsError, TrainingInterrupted

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parse_args(parser, sys.argv[1:] if argv is None else argv)
    if args.command == "train":
        _check_train_args(parser, args)
    try:
        return int(args.handler(args))
    except MetodsError as exc:
        if isinstance(exc, TrainingInterrupted):  # checkpointed; the resume command is inside
            print(f"interrupted: {exc}", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `metods plugins | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a folder that is a file, read-only, full, not ours: the user's to fix
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR


def _os_error(exc: OSError) -> str:
    """One line for an operating-system error: the file, the reason, what to check."""
    where = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    reason = exc.strerror or str(exc)
    return f"{where + ': ' if where else ''}{reason} (check the path, free space and permissions)"


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` with the subcommand's parser in intermixed mode.

    ``parse_intermixed_args`` lets ``key=value`` overrides come anywhere on the line, after
    options too (``metods ablate R --grid k=1,2 --out D trainer.max_steps=5``), while the recipe
    stays an explicit first positional, so a path with ``=`` in it (a run folder that
    ``metods ablate`` names ``recursion_steps=1-seed0``) is still the recipe. argparse refuses
    intermixed parsing of a parser with subparsers, so the command is picked first. The standard
    library suffices here (and keeps ``--help`` cheap); a CLI library would add a dependency for
    the same two lines.
    """
    argv = list(argv)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if argv and argv[0] in commands.choices:
        args = commands.choices[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="metods",
        description="Meta-reinforcement learning with self-modifying networks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    overrides_help = "recipe overrides, e.g. trainer.max_steps=10 plasticity.recursion_steps=2"

    validate = commands.add_parser("validate", help="check a recipe and report every problem")
    validate.add_argument("recipe", metavar="RECIPE", type=Path)
    validate.add_argument("overrides", metavar="key=value", nargs="*", help=overrides_help)
    validate.set_defaults(handler=handlers.validate)

    show = commands.add_parser("show", help="print a recipe resolved, with every default")
    show.add_argument("recipe", metavar="RECIPE", type=Path)
    show.add_argument("overrides", metavar="key=value", nargs="*", help=overrides_help)
    show.set_defaults(handler=handlers.show)

    plugins = commands.add_parser("plugins", help="list installed components by group")
    plugins.set_defaults(handler=handlers.plugins)

    train = commands.add_parser(
        "train",
        help="train a recipe, or resume a run",
        usage="metods train RECIPE [key=value ...] [--run-dir DIR]\n"
        "       metods train --resume DIR [key=value ...]",
    )
    train.add_argument("recipe", metavar="RECIPE", nargs="?", help="the recipe file")
    train.add_argument("overrides", metavar="key=value", nargs="*", help=overrides_help)
    train.add_argument("--run-dir", type=Path, help="where to write the run (default: runs/...)")
    train.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR")
    train.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="with --resume: the checkpoint to continue from (default: last.ckpt; if it is "
        "unreadable, the error lists the earlier ones)",
    )
    train.set_defaults(handler=handlers.train)

    evaluate = commands.add_parser("evaluate", help="meta-test a trained run on held-out tasks")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    evaluate.add_argument(
        "--episodes", type=int, help="held-out lifetimes, at least 1 (default: recipe's)"
    )
    evaluate.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="the checkpoint to evaluate: a path, or `best` (the run's best.ckpt, kept with "
        "trainer.keep_best=true) (default: the run's last.ckpt)",
    )
    evaluate.add_argument(
        "--split",
        choices=("test", "train", "validation"),
        default="test",
        help="the tasks to meta-test on: `test`, the held-out ones, `train`, those the run "
        "trained on (beside `test`, the generalisation gap; files tagged -train), or "
        "`validation`, a task's validation split (files tagged -validation) (default: test)",
    )
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.add_argument(
        "--greedy", action="store_true", default=None, help="act greedily instead of sampling"
    )
    evaluate.add_argument(
        "--override",
        dest="overrides",
        metavar="key=value",
        action="append",
        default=[],
        help="recipe override for evaluation (repeatable)",
    )
    add_freeze_memory_argument(evaluate)
    evaluate.set_defaults(handler=handlers.evaluate)

    impairment = commands.add_parser(
        "impairment",
        help="evaluate MuJoCo runs intact and with each actuator disabled; write the table",
        description="Evaluate each run intact and with each actuator disabled in turn "
        "(task.impair_actuator=K), then write the table: the returns, the paper's normalised "
        "score (by the best run in each condition) and impaired / intact of each run.",
    )
    impairment.add_argument("runs", metavar="RUN_DIR", type=Path, nargs="+")
    impairment.add_argument(
        "--episodes", type=int, help="held-out lifetimes per condition (default: recipe's)"
    )
    impairment.add_argument(
        "--checkpoint",
        choices=["last", "best"],
        default="last",
        help="each run's last.ckpt (default) or best.ckpt",
    )
    impairment.add_argument(
        "--segments",
        type=int,
        default=4,
        help="equal parts of the lifetime over which impaired / intact is also given, to see "
        "whether a policy adapts to the disabled actuator within the lifetime (default: 4)",
    )
    add_freeze_memory_argument(impairment)
    impairment.add_argument("--out", type=Path, help="also write the Markdown table here")
    impairment.add_argument("--json", action="store_true", help="print the table as JSON")
    impairment.set_defaults(handler=handlers.impairment)

    curve = commands.add_parser(
        "curve",
        help="a run's training log over windows of outer steps, as a table",
        description="Summarise logged training columns (train/episode_reward by default) of "
        "one or several runs over consecutive windows of outer steps, across resumes (later "
        "logs win for repeated steps), and print a Markdown table (or JSON).",
    )
    curve.add_argument("runs", metavar="RUN_DIR", type=Path, nargs="+")
    curve.add_argument(
        "--column",
        dest="columns",
        action="append",
        metavar="NAME",
        help="a logged column, the train/ prefix optional: episode_reward, success, "
        "grad_norm/rule, rule/memory_decay, ... (repeatable; default: episode_reward)",
    )
    curve.add_argument(
        "--window", type=int, default=10, help="outer steps per window, at least 1 (default: 10)"
    )
    curve.add_argument(
        "--stat",
        choices=("mean", "min", "max"),
        default="mean",
        help="how each window's values are summarised (default: mean)",
    )
    curve.add_argument("--json", action="store_true", help="print the table as JSON")
    curve.set_defaults(handler=handlers.curve)

    ablate = commands.add_parser(
        "ablate",
        help="train and evaluate a grid of recipe variants over seeds; tabulate and plot",
        usage="metods ablate RECIPE [key=value ...] --grid key=v1,v2 [--grid ...] [--seeds N] "
        "[--jobs J | --launcher submitit ...] [--out DIR] [--impairment] [--checkpoint best]\n"
        "       metods ablate ABLATION.yaml [key=value ...] [--seeds N] "
        "[--jobs J | --launcher submitit ...] [--out DIR] [--impairment] [--checkpoint best]",
        description="Run every combination of the grid's values for each seed, J runs at a "
        "time (or as SLURM jobs with --launcher submitit), then write results.csv, "
        "summary.md, ablation.png and ablation.json into OUT (and impairment.md with "
        "--impairment). "
        "Running the same command again skips finished runs and resumes interrupted ones.",
    )
    ablate.add_argument(
        "file", metavar="FILE", type=Path, help="a recipe, or an ablation file (one with `grid:`)"
    )
    ablate.add_argument(
        "overrides", metavar="key=value", nargs="*", help="overrides for every run, anywhere"
    )
    ablate.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="key=v1,v2",
        help="with a RECIPE: a recipe key and its values (repeatable; `recipe=a.yaml,b.yaml` "
        "varies the recipe file)",
    )
    ablate.add_argument(
        "--seeds", help="a count N (seeds 0..N-1) or a list 0,3,7 (default: 1, or the file's)"
    )
    from metods_core._launcher_args import add_launcher_arguments

    add_launcher_arguments(ablate)  # --launcher, --jobs, the SLURM resources of a run
    ablate.add_argument("--out", type=Path, help="output folder (default: ablations/<file stem>)")
    ablate.add_argument("--episodes", type=int, help="held-out lifetimes per evaluation")
    ablate.add_argument(
        "--impairment",
        action="store_true",
        help="MuJoCo runs: also evaluate each run with each actuator disabled, and score the "
        "runs of each seed against each other (impairment.md; as the file's `impairment: true`)",
    )
    ablate.add_argument(
        "--checkpoint",
        choices=("last", "best"),
        help="the checkpoint of each run to evaluate: last (default, or the file's), or best, "
        "its best.ckpt (recipes with trainer.keep_best=true; as the file's `checkpoint: best`)",
    )
    ablate.set_defaults(handler=handlers.ablate)
    return parser


def add_freeze_memory_argument(parser: argparse.ArgumentParser) -> None:
    """The memory lesion of ``evaluate`` and ``impairment``: ``--freeze-memory K``."""
    parser.add_argument(
        "--freeze-memory",
        type=int,
        metavar="K",
        help="a lesion: hold the agent's memory (plastic synapses, recurrent state) from step "
        "K of each lifetime on, so that it stores nothing after its first K steps; 0 gives the "
        "memoryless policy (files tagged -freeze_memory=K) (default: no lesion)",
    )


def _check_train_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.resume is not None:
        if args.run_dir is not None:
            parser.error("train: --resume DIR continues DIR; do not also give --run-dir")
        if args.recipe is not None:  # no recipe with --resume: the first positional is an override
            if Path(args.recipe).suffix in (".yaml", ".yml") or "=" not in args.recipe:
                parser.error("train: with --resume, give overrides only (the recipe is in DIR)")
            args.recipe, args.overrides = None, [args.recipe, *args.overrides]
    else:
        if args.checkpoint is not None:
            parser.error("train: --checkpoint goes with --resume DIR")
        if args.recipe is None:
            parser.error("train: give a RECIPE (or --resume DIR)")
        args.recipe = Path(args.recipe)


if __name__ == "__main__":
    sys.exit(main())
