"""Expand an ablation into planned runs: grid cells x seeds, each validated up front.

Each run is ``<cell>-seed<k>``, where the cell's slug names its grid values the way Hydra's
multirun names override directories (``recursion_steps=1,alpha=none``): the last part of each
key (the whole key where two share it) and a file-name-safe form of the value (a recipe file's
stem for the ``recipe`` axis). Its overrides are the ablation's, then the cell's values (a
``<component>.name`` value switches the component, see ``metods_core.recipe``), then
``seed=k``, ``logger.wandb.group=<ablation name>`` and ``trainer.num_threads``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from pathlib import Path
from typing import Any

import yaml

from metods_core.ablation.spec import (
    RECIPE_AXIS,
    Ablation,
    AblationError,
    Checkpoint,
    resolve_path,
)
from metods_core.recipe import Recipe, RecipeError, load_recipe, recipe_to_dict


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of an ablation: a grid cell, a seed, and how to train and evaluate it."""

    name: str
    """``<cell>-seed<k>``, the run directory's name."""
    cell: str
    """The grid cell's slug, shared by its seeds."""
    values: dict[str, Any]
    """Grid key -> value of this cell."""
    seed: int
    recipe: Path
    """The recipe file given to ``metods train``."""
    overrides: list[str]
    """The overrides given to ``metods train`` after the recipe."""
    run_dir: Path
    max_steps: int
    episodes: int
    greedy: bool
    resolved: dict[str, Any]
    """The validated recipe as plain data (compared with a run directory's saved recipe)."""
    impairment: bool = False
    """Also evaluate the run with each actuator disabled (``metods impairment``)."""
    checkpoint: Checkpoint = "last"
    """The checkpoint evaluated: the run's last, or its ``best.ckpt``."""

    def to_json(self) -> dict[str, Any]:
        """Return the plan of this run as JSON-ready data."""
        return {
            "name": self.name,
            "cell": self.cell,
            "values": self.values,
            "seed": self.seed,
            "recipe": str(self.recipe),
            "overrides": self.overrides,
            "run_dir": str(self.run_dir),
            "max_steps": self.max_steps,
            "episodes": self.episodes,
            "greedy": self.greedy,
            "impairment": self.impairment,
            "checkpoint": self.checkpoint,
        }


def plan_runs(ablation: Ablation, threads: int) -> list[PlannedRun]:
    """Expand the grid x seeds into runs, validating every run's recipe first.

    Raises:
        AblationError: every problem of every run, grouped by grid cell, before anything starts.
    """
    keys = list(ablation.grid)
    labels = {key: _axis_labels(key, values) for key, values in ablation.grid.items()}
    shorts = _short_keys(keys)
    runs, problems = [], []
    for combination in itertools.product(*(range(len(ablation.grid[k])) for k in keys)):
        values = {key: ablation.grid[key][i] for key, i in zip(keys, combination, strict=True)}
        parts = [f"{shorts[k]}={labels[k][i]}" for k, i in zip(keys, combination, strict=True)]
        cell = _shorten(",".join(parts)) if parts else _label(Path(str(ablation.base)).stem)
        recipe = ablation.base
        if RECIPE_AXIS in values:
            recipe = resolve_path(ablation.root, str(values[RECIPE_AXIS]))
        grid_overrides = [
            f"{key}={format_value(value)}" for key, value in values.items() if key != RECIPE_AXIS
        ]
        cell_problems: list[str] = []
        for seed in ablation.seeds:
            overrides = [
                *ablation.overrides,
                *grid_overrides,
                f"seed={seed}",
                f"logger.wandb.group={format_value(ablation.name)}",
                f"trainer.num_threads={threads}",
            ]
            assert recipe is not None
            try:
                resolved = load_recipe(recipe, overrides)
            except RecipeError as exc:
                found = [str(p) for p in exc.problems]
                cell_problems += [p for p in found if p not in cell_problems]
                continue
            unevaluable = _evaluation_problems(ablation, resolved)
            if unevaluable:
                cell_problems += [p for p in unevaluable if p not in cell_problems]
                continue
            name = f"{cell}-seed{seed}"
            runs.append(
                PlannedRun(
                    name=name,
                    cell=cell,
                    values=values,
                    seed=seed,
                    recipe=recipe,
                    overrides=overrides,
                    run_dir=ablation.out / "runs" / name,
                    max_steps=resolved.trainer.max_steps,
                    episodes=ablation.episodes or resolved.evaluation.episodes,
                    greedy=resolved.evaluation.greedy,
                    resolved=recipe_to_dict(resolved),
                    impairment=ablation.impairment,
                    checkpoint=ablation.checkpoint,
                )
            )
        problems += [f"{cell} ({recipe}): {problem}" for problem in cell_problems]
    if not ablation.seeds:
        problems.append("seeds: no seed to run")
    if problems:
        raise AblationError(problems, f"ablation {ablation.source or ablation.out}")
    return runs


def _evaluation_problems(ablation: Ablation, recipe: Recipe) -> list[str]:
    """Return why this recipe's runs cannot be evaluated as the ablation asks (none: [])."""
    problems = []
    unimpairable = _impairment_problem(recipe) if ablation.impairment else None
    if unimpairable is not None:
        problems.append(unimpairable)
    if ablation.checkpoint == "best":
        unkept = _best_checkpoint_problem(recipe)
        if unkept is not None:
            problems.append(unkept)
    return problems


def _best_checkpoint_problem(recipe: Recipe) -> str | None:
    """Return why this recipe's runs end without a ``best.ckpt`` to evaluate, or None."""
    from metods_core.training.schedule import first_best_step

    trainer = recipe.trainer
    if not trainer.keep_best:
        return (
            "checkpoint: best evaluates each run's best.ckpt, which its recipe does not keep; "
            "set trainer.keep_best: true in the recipe or the ablation's overrides, or "
            "checkpoint: last"
        )
    first, field = first_best_step(recipe)
    if first is not None and first <= trainer.max_steps:
        return None
    when = "never" if first is None else f"first at outer step {first}"
    return (
        f"checkpoint: best evaluates each run's best.ckpt, which a run writes {when} ({field}), "
        f"but its budget is trainer.max_steps={trainer.max_steps}; set {field} to at most "
        f"{trainer.max_steps}, or checkpoint: last"
    )


def _impairment_problem(recipe: Recipe) -> str | None:
    """Return why ``impairment: true`` cannot evaluate this recipe's runs, or None."""
    from metods_core.impairment import IMPAIR_FIELD, IMPAIRABLE_TASKS, can_impair

    if can_impair(recipe):
        return None
    return (
        f"impairment: true needs a task with actuators to disable (task.{IMPAIR_FIELD}: "
        f"{IMPAIRABLE_TASKS}), but this recipe's task is '{recipe.task.name}'"
    )


def format_value(value: Any) -> str:
    """Return ``value`` as override text that YAML parses back into the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text.removesuffix("...").strip()


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "empty"


def _axis_labels(key: str, values: list[Any]) -> list[str]:
    """Return a file-name-safe label per value, unique within the axis."""
    if key == RECIPE_AXIS:
        labels = [_label(Path(str(value)).stem) for value in values]
        if len(set(labels)) < len(labels):
            labels = [_label(str(Path(str(value)).with_suffix(""))) for value in values]
    else:
        labels = [_label(format_value(value)) for value in values]
    if len(set(labels)) < len(labels):
        labels = [f"{i}-{label}" for i, label in enumerate(labels)]
    return labels


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Name each key by its last part (``plasticity.alpha`` -> ``alpha``) unless that repeats."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    pairs = zip(keys, last, strict=True)
    return {key: short if last.count(short) == 1 else key for key, short in pairs}


def _shorten(slug: str, limit: int = 120) -> str:
    """Keep run directory names well under file-system limits, still unique."""
    if len(slug) <= limit:
        return slug
    digest = hashlib.blake2b(slug.encode(), digest_size=4).hexdigest()
    return f"{slug[: limit - 9]}-{digest}"
