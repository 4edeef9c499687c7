"""What an ablation is: an ablation file, or a recipe with command-line ``--grid`` arguments.

An ablation file is a YAML mapping with a ``grid``::

    base: ../harlow/metods.yaml          # relative to this file
    grid:
      plasticity.recursion_steps: [1, 2, 4]
      plasticity.alpha: [elementwise, none]
    seeds: 3                             # seeds 0, 1, 2 (or a list: [0, 7, 9])
    overrides: [trainer.max_steps=2000]  # applied to every run
    episodes: 1000                       # held-out lifetimes per evaluation
    out: ablations/harlow_depth_alpha    # relative to the current directory
    impairment: false                    # MuJoCo runs: also evaluate each actuator disabled
    checkpoint: last                     # or best: each run's best.ckpt (trainer.keep_best)

The grid key ``recipe`` varies the base recipe file itself (paths relative to the ablation
file), for comparisons whose runs differ in more than a few fields. A grid key
``<component>.name`` switches that component as a command-line override does. From the command
line (``metods ablate RECIPE --grid key=v1,v2``) values are split at commas outside brackets and
quotes and read as YAML, and ``recipe`` paths are relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from metods_core.ablation.launcher_options import launcher_problems, merge_launcher_section
from metods_core.errors import MetodsError
from metods_core.recipe import pydantic_problems

RECIPE_AXIS = "recipe"
"""The grid key that varies the base recipe file."""

Checkpoint = Literal["last", "best"]
"""Which checkpoint of each run an ablation evaluates."""


class AblationError(MetodsError):
    """An ablation cannot start; the message lists every reason."""

    def __init__(self, problems: Sequence[str], what: str) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = [f"{what} has {count} problem{'s' if count != 1 else ''} (nothing was started):"]
        super().__init__("\n".join([*lines, *(f"  - {problem}" for problem in self.problems)]))


class AblationFile(BaseModel):
    """The contents of an ablation YAML file."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)
    base: str | None = None
    """Recipe every run starts from, relative to the ablation file (optional with a recipe axis)."""
    grid: dict[str, list[Any]]
    """Dotted recipe keys and the values to try; the key `recipe` varies the base recipe file."""
    seeds: int | list[int] = 1
    """Seeds per grid cell: a count N (seeds 0..N-1) or a list of seeds."""
    overrides: list[str] = Field(default_factory=list)
    """key=value overrides applied to every run, before the grid's values."""
    episodes: int | None = Field(default=None, gt=0)
    """Held-out lifetimes per evaluation; None: each recipe's evaluation.episodes."""
    out: str | None = None
    """Output folder, relative to the current directory; None: ablations/<file stem>."""
    impairment: bool = False
    """Also evaluate every run with each actuator disabled in turn (``metods impairment``; MuJoCo
    runs only) and score the runs of each seed against each other as the MetODS paper does
    (impairment.md; the scores in results.csv and summary.md)."""
    checkpoint: Checkpoint = "last"
    """The checkpoint of each run to evaluate: `last`, or `best`, the run's best.ckpt (its recipes
    need trainer.keep_best: true; on Meta-World, chosen by the validation split)."""
    launcher: dict[str, Any] | None = None
    """How runs are executed: `{name: local, jobs: 2}` (default local, 1 at a time) or
    `{name: submitit, partition: gpu, ...}`; the options are the launcher's own."""


@dataclasses.dataclass(frozen=True)
class Ablation:
    """A grid of recipe variants x seeds, ready to expand into runs."""

    base: Path | None
    """Recipe every run starts from, unless the grid has a recipe axis."""
    grid: dict[str, list[Any]]
    """Grid keys in order (the first varies slowest) and their values."""
    seeds: list[int]
    """Seeds of every grid cell."""
    out: Path
    """Output folder; its name is the ablation's name and W&B group."""
    overrides: list[str] = dataclasses.field(default_factory=list)
    """Overrides of every run, before the grid's values."""
    episodes: int | None = None
    """Held-out lifetimes per evaluation; None: each recipe's own."""
    source: str | None = None
    """The ablation file, or None for a command-line grid."""
    root: Path = Path(".")
    """Folder that recipe-axis paths are relative to."""
    impairment: bool = False
    """Also evaluate every run with each actuator disabled, and score them (MuJoCo runs)."""
    checkpoint: Checkpoint = "last"
    """The checkpoint of each run to evaluate: its last, or its best.ckpt."""
    launcher: dict[str, Any] = dataclasses.field(default_factory=lambda: {"name": "local"})
    """The launcher section: its ``name`` and options (validated when the ablation is built)."""

    @property
    def name(self) -> str:
        """The ablation's name: its output folder's name."""
        return self.out.resolve().name


def is_ablation_file(path: Path) -> bool:
    """Return whether ``path`` holds an ablation (a YAML mapping with ``grid``), not a recipe."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # loading it as a recipe reports the problem
    return isinstance(data, Mapping) and "grid" in data


def load_ablation(
    path: Path,
    overrides: Sequence[str] = (),
    out: Path | None = None,
    episodes: int | None = None,
    seeds: str | None = None,
    launcher: str | None = None,
    launcher_options: Mapping[str, Any] | None = None,
    impairment: bool = False,
    checkpoint: Checkpoint | None = None,
) -> Ablation:
    """Read an ablation file; ``overrides``, ``out``, ``episodes``, ``seeds`` (a count or a
    comma-separated list, as ``--seeds`` takes), ``launcher`` (a name), ``launcher_options``
    and ``checkpoint`` add to or replace its own; ``impairment`` True turns on the impairment
    evaluation."""
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    try:
        spec = AblationFile.model_validate(data)
    except ValidationError as exc:
        problems = [str(p) for p in pydantic_problems(exc, AblationFile)]
        raise AblationError(problems, f"ablation {path}") from None
    problems = [f"grid.{key}: expected at least one value" for key, v in spec.grid.items() if not v]
    if spec.base is None and RECIPE_AXIS not in spec.grid:
        problems.append(f"base: missing; name the recipe to ablate, or add a {RECIPE_AXIS!r} axis")
    seed_list = _seed_list(spec.seeds)
    if seeds is not None:
        try:
            seed_list = _parse_seeds(seeds)
        except ValueError:
            problems.append(f"--seeds {seeds!r}: expected a count N or a list like 0,3,7")
    section = merge_launcher_section(spec.launcher, launcher, launcher_options or {})
    problems += launcher_problems(section)
    if problems:
        raise AblationError(problems, f"ablation {path}")
    return Ablation(
        base=resolve_path(path.parent, spec.base) if spec.base is not None else None,
        grid=dict(spec.grid),
        seeds=seed_list,
        out=out or Path(spec.out or Path("ablations") / path.stem),
        overrides=[*spec.overrides, *overrides],
        episodes=episodes or spec.episodes,
        source=str(path),
        root=path.parent,
        launcher=section,
        impairment=spec.impairment or impairment,
        checkpoint=checkpoint or spec.checkpoint,
    )


def ablation_from_grid(
    recipe: Path,
    grid: Sequence[str],
    seeds: str | int = 1,
    overrides: Sequence[str] = (),
    out: Path | None = None,
    episodes: int | None = None,
    launcher: str | None = None,
    launcher_options: Mapping[str, Any] | None = None,
    impairment: bool = False,
    checkpoint: Checkpoint = "last",
) -> Ablation:
    """Build an ablation from a recipe and ``key=v1,v2`` grid arguments (``recipe`` paths: cwd),
    run by ``launcher`` (default: local) with ``launcher_options``; ``impairment`` and
    ``checkpoint`` as the ablation file's fields."""
    axes: dict[str, list[Any]] = {}
    problems = []
    for item in grid:
        key, _, text = item.partition("=")
        values = [yaml.safe_load(part) for part in _split_top_level(text)] if text else []
        if not key or not values or key in axes:
            reason = "repeats a key" if key in axes else "is not of the form key=v1,v2,..."
            problems.append(f"--grid {item!r} {reason}")
        axes[key] = values
    try:
        seed_list = _parse_seeds(str(seeds))
    except ValueError:
        problems.append(f"--seeds {seeds!r}: expected a count N or a list like 0,3,7")
        seed_list = []
    section = merge_launcher_section(None, launcher, launcher_options or {})
    problems += launcher_problems(section)
    if problems:
        raise AblationError(problems, "the command line")
    recipe = Path(recipe)
    return Ablation(
        base=recipe,
        grid=axes,
        seeds=seed_list,
        out=out or Path("ablations") / recipe.stem,
        overrides=list(overrides),
        episodes=episodes,
        launcher=section,
        impairment=impairment,
        checkpoint=checkpoint,
    )


def resolve_path(folder: Path, path: str) -> Path:
    """Return ``path`` relative to ``folder`` (unless absolute), normalised."""
    return Path(path) if Path(path).is_absolute() else Path(os.path.normpath(folder / path))


def _seed_list(seeds: int | list[int]) -> list[int]:
    values = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    return list(dict.fromkeys(values))


def _parse_seeds(text: str) -> list[int]:
    """Parse ``--seeds``: a count N (seeds 0..N-1) or a comma-separated list of seeds."""
    if text.strip().isdigit():
        return _seed_list(int(text))
    return _seed_list([int(part) for part in text.split(",") if part.strip()])


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets and quotes: ``a,[b,c],'d,e'`` -> 3 values."""
    parts, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]
