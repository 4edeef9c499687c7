"""Start a run folder (its recipe and versions) and read a run's recipe back.

The layout itself is :class:`metods_core.run_folder.RunFolder`'s.
"""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from metods_core.errors import MetodsError
from metods_core.recipe import Recipe, recipe_to_yaml
from metods_core.registry import GROUPS, list_plugins
from metods_core.run_folder import RunFolder
from metods_core.training.atomic import write_text_atomic
from metods_core.training.resume import resume_overrides


def default_run_dir(recipe: Recipe, root: Path = Path("runs")) -> Path:
    """Return ``runs/<name>-<UTC time>`` for a new run of ``recipe``."""
    name = recipe.name or (Path(recipe.source).stem if recipe.source else "run")
    return root / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def collect_versions() -> dict[str, Any]:
    """Return the versions of the stack and of every installed plugin."""
    plugins = {
        kind: [
            {"name": info.name, "distribution": info.distribution, "version": info.version}
            for info in list_plugins(kind)
        ]
        for kind in GROUPS
    }
    packages = ["metods", "torch", "lightning", "omegaconf", "pydantic", "gymnasium", "wandb"]
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in packages},
        "plugins": plugins,
    }


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a ``--run-dir`` that is a file, holds a run, or holds anything else.

    Raises:
        MetodsError: with what to do instead; nothing was written.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise MetodsError(f"--run-dir {run_dir} is a file, not a folder: choose another --run-dir")
    if RunFolder(run_dir).recipe.exists():
        raise MetodsError(
            f"{run_dir} already holds a run; continue it with `metods train --resume {run_dir}`, "
            "or choose another --run-dir (nothing was overwritten)"
        )
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise MetodsError(
            f"{run_dir} is not empty and is not a metods run: choose a new or empty --run-dir "
            "(nothing was overwritten)"
        )


def write_run_files(run_dir: Path, recipe: Recipe) -> None:
    """Write the resolved recipe and the versions into ``run_dir`` (each file atomically)."""
    folder = RunFolder(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        folder.checkpoints.mkdir(exist_ok=True)
    except OSError as error:
        raise MetodsError(
            f"cannot create the run folder {run_dir}: {error.strerror or error}"
        ) from None
    write_text_atomic(folder.recipe, recipe_to_yaml(recipe))
    write_text_atomic(folder.versions, json.dumps(collect_versions(), indent=2) + "\n")


def read_run_recipe(
    run_dir: Path, overrides: list[str] | tuple[str, ...] = (), history: bool = True
) -> Recipe:
    """Load the recipe of ``run_dir`` as it stands now, with optional ``key=value`` overrides.

    That is ``recipe.yaml`` with the overrides of every recorded resume applied in order
    (``history=False``: ``recipe.yaml`` alone), then ``overrides``.
    """
    from metods_core.recipe import load_recipe

    path = RunFolder(run_dir).recipe
    if not path.is_file():
        raise MetodsError(
            f"{run_dir} is not a metods run directory: it has no {path.name}. "
            "Pass the directory that `metods train` created (it prints it when it starts)."
        )
    earlier = resume_overrides(run_dir) if history else []
    return load_recipe(path, [*earlier, *overrides])
