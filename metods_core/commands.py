"""What each ``metods`` subcommand does, given its parsed arguments (``cli.py`` parses them).

Each handler returns the exit status; errors are raised as ``MetodsError`` for ``cli.main`` to
report. Heavy modules (torch, Lightning, W&B) are imported inside the handlers, so that
``metods --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from metods_core.errors import MetodsError

__all__ = [
    "ablate",
    "curve",
    "evaluate",
    "format_table",
    "impairment",
    "plugins",
    "show",
    "train",
    "validate",
]


def validate(args: argparse.Namespace) -> int:
    from metods_core.recipe import load_recipe

    load_recipe(args.recipe, args.overrides)
    print(f"ok: {args.recipe}")
    return 0


def show(args: argparse.Namespace) -> int:
    from metods_core.recipe import load_recipe, recipe_to_yaml

    print(recipe_to_yaml(load_recipe(args.recipe, args.overrides)), end="")
    return 0


def plugins(args: argparse.Namespace) -> int:
    from metods_core.registry import GROUPS, describe_plugin, list_plugins

    for kind, group in GROUPS.items():
        infos = list_plugins(kind)
        print(f"{group} ({kind}):")
        if not infos:
            print("  (none installed)")
        names = [info.name for info in infos]
        rows = []
        for info in infos:
            summary = describe_plugin(info)
            if names.count(info.name) > 1:
                summary = f"CONFLICT: {info.name!r} is registered twice; {summary}"
            rows.append((info.name, info.distribution or "?", info.version or "?", summary))
        widths = [max((len(row[i]) for row in rows), default=0) for i in range(3)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            print("  " + "  ".join([*cells, row[3]]))
    return 0


def train(args: argparse.Namespace) -> int:
    from metods_core.training import resume_run, train_recipe

    if args.resume is not None:
        run_dir = resume_run(args.resume, list(args.overrides), checkpoint=args.checkpoint)
    else:
        from metods_core.recipe import load_recipe

        run_dir = train_recipe(load_recipe(args.recipe, args.overrides), args.run_dir)
    print(f"run directory: {run_dir}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from metods_core.evaluation import evaluate_run

    if args.episodes is not None and args.episodes < 1:
        raise MetodsError(f"evaluate: --episodes must be at least 1, got {args.episodes}")
    _check_freeze_memory("evaluate", args.freeze_memory)
    result = evaluate_run(
        args.run_dir,
        args.episodes,
        list(args.overrides),
        args.greedy,
        args.checkpoint,
        split=args.split,
        freeze_memory=args.freeze_memory,
    )
    if args.json:
        print(json.dumps(result, default=_jsonable))
    else:
        print(format_table(result))
    return 0


def impairment(args: argparse.Namespace) -> int:
    from metods_core.impairment import format_markdown, impairment_table
    from metods_core.training.atomic import write_text_atomic

    if args.episodes is not None and args.episodes < 1:
        raise MetodsError(f"impairment: --episodes must be at least 1, got {args.episodes}")
    if args.segments < 1:
        raise MetodsError(f"impairment: --segments must be at least 1, got {args.segments}")
    _check_freeze_memory("impairment", args.freeze_memory)
    table = impairment_table(
        args.runs,
        args.episodes,
        args.checkpoint,
        segments=args.segments,
        freeze_memory=args.freeze_memory,
    )
    markdown = format_markdown(table)
    if args.out is not None:
        write_text_atomic(args.out, markdown)
    print(json.dumps(table) if args.json else markdown, end="\n" if args.json else "")
    return 0


def _check_freeze_memory(command: str, step: int | None) -> None:
    """Refuse a negative ``--freeze-memory`` before any evaluation (the lifetime's end is
    checked by the evaluation, which knows it)."""
    if step is not None and step < 0:
        raise MetodsError(
            f"{command}: --freeze-memory must be a step of the lifetime (0 or more), got {step}"
        )


def curve(args: argparse.Namespace) -> int:
    from metods_core.training_log import format_window_markdown, window_table

    columns = args.columns or ["episode_reward"]
    table = window_table(args.runs, columns, args.window, args.stat)
    print(
        json.dumps(table) if args.json else format_window_markdown(table),
        end="\n" if args.json else "",
    )
    return 0


def ablate(args: argparse.Namespace) -> int:
    import shlex

    from metods_core._launcher_args import launcher_flags, launcher_overrides
    from metods_core.ablation import (
        ablation_from_grid,
        is_ablation_file,
        load_ablation,
        run_ablation,
    )

    if args.episodes is not None and args.episodes < 1:
        raise MetodsError("ablate: --episodes must be at least 1")
    launcher, launcher_options = launcher_overrides(args)
    path, overrides = args.file, list(args.overrides)
    if is_ablation_file(path):
        if args.grid:
            raise MetodsError(
                f"{path} is an ablation file, which sets the grid; --grid goes with a RECIPE"
            )
        ablation = load_ablation(
            path, overrides, args.out, args.episodes, args.seeds, launcher, launcher_options,
            args.impairment, args.checkpoint,
        )  # fmt: skip
    else:
        seeds = args.seeds if args.seeds is not None else 1
        ablation = ablation_from_grid(
            path, args.grid, seeds, overrides, args.out, args.episodes, launcher,
            launcher_options, args.impairment, args.checkpoint or "last",
        )  # fmt: skip
    options = [f"--grid={item}" for item in args.grid]
    options += [] if args.seeds is None else [f"--seeds={args.seeds}"]
    options += [*launcher_flags(launcher, launcher_options), f"--out={ablation.out}"]
    options += [] if args.episodes is None else [f"--episodes={args.episodes}"]
    options += ["--impairment"] if args.impairment else []
    options += [] if args.checkpoint is None else [f"--checkpoint={args.checkpoint}"]
    command = shlex.join(["metods", "ablate", str(path), *overrides, *options])
    result = run_ablation(ablation, None, command)
    for written in result.files:
        print(f"wrote {written}")
    for outcome in result.failed:
        print(f"failed: {outcome.run.name}: {outcome.error}", file=sys.stderr)
    done = len(result.outcomes) - len(result.failed)
    print(f"{done}/{len(result.outcomes)} runs done in {result.wall_time_s:.0f} s")
    return 1 if result.failed else 0


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # tensors and numpy values
        return value.tolist()
    return str(value)


def format_table(result: dict[str, Any]) -> str:
    """Return ``result`` as a two-column table, nested keys joined with dots."""
    rows = list(_flatten(result, ""))
    width = max((len(key) for key, _ in rows), default=0)
    return "\n".join(f"{key.ljust(width)}  {text}" for key, text in rows)


def _flatten(value: Any, prefix: str) -> Any:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list | tuple):
        yield prefix, "[" + ", ".join(_number(item) for item in value) + "]"
    else:
        yield prefix, _number(value)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
