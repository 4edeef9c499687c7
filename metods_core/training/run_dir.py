"""Run directories: the resolved recipe, versions, logs and checkpoints of one training run.

Layout::

    RUN_DIR/
      recipe.yaml            the fully resolved recipe (the run's single source of truth)
      versions.json          Python, torch, Lightning, metods and every installed plugin
      checkpoints/last.ckpt  the latest checkpoint; step=NNNNNN.ckpt the periodic ones
      logs/version_K/metrics.csv   one CSV log per (re)start of the run
      wandb/                 the W&B run (offline unless asked otherwise)
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

RECIPE_FILE = "recipe.yaml"
VERSIONS_FILE = "versions.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


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


def write_run_files(run_dir: Path, recipe: Recipe) -> None:
    """Write the resolved recipe and the versions into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
    (run_dir / RECIPE_FILE).write_text(recipe_to_yaml(recipe))
    (run_dir / VERSIONS_FILE).write_text(json.dumps(collect_versions(), indent=2) + "\n")


def read_run_recipe(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load the recipe saved in ``run_dir``, with optional ``key=value`` overrides."""
    from metods_core.recipe import load_recipe

    path = run_dir / RECIPE_FILE
    if not path.is_file():
        raise MetodsError(
            f"{run_dir} is not a metods run directory: it has no {RECIPE_FILE}. "
            "Pass the directory that `metods train` created (it prints it when it starts)."
        )
    return load_recipe(path, list(overrides))
