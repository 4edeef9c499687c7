"""Loggers of a run: CSV always, Weights & Biases offline unless asked otherwise."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from metods_core.recipe import Recipe, recipe_to_dict
from metods_core.training.run_dir import collect_versions

WANDB_ID_FILE = "wandb_id.txt"


def wandb_mode(recipe: Recipe) -> str:
    """Return the W&B mode: ``WANDB_MODE`` from the environment if set, else the recipe's.

    The mode is always explicit: W&B started with no mode and no API key waits at an
    interactive prompt, so metods never lets it choose.
    """
    return os.environ.get("WANDB_MODE") or recipe.logger.wandb.mode


def create_loggers(recipe: Recipe, run_dir: Path) -> list[Logger]:
    """Return the run's loggers; the W&B run id is kept in the run directory for resuming."""
    loggers: list[Logger] = []
    if recipe.logger.csv:
        loggers.append(CSVLogger(save_dir=run_dir, name="logs"))
    mode = wandb_mode(recipe)
    if mode != "disabled":
        if mode != "online":
            # Offline runs need no network at all: no telemetry look-up either.
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        id_file = run_dir / WANDB_ID_FILE
        if id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            run_id = secrets.token_hex(4)
            id_file.write_text(run_id + "\n")
        wandb_config = recipe.logger.wandb
        loggers.append(
            WandbLogger(
                save_dir=str(run_dir),
                project=wandb_config.project,
                entity=wandb_config.entity,
                group=wandb_config.group,
                tags=list(wandb_config.tags),
                name=run_dir.name,
                id=run_id,
                resume="allow",
                mode=mode,
                config={**recipe_to_dict(recipe), "versions": collect_versions()},
            )
        )
    return loggers
