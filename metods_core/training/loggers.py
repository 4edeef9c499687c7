"""Loggers of a run: CSV always, Weights & Biases offline unless asked otherwise."""

from __future__ import annotations

import csv
import io
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from metods_core.recipe import Recipe, recipe_to_dict
from metods_core.run_folder import RunFolder
from metods_core.training.atomic import WriteError, write_text_atomic
from metods_core.training.run_dir import collect_versions


def wandb_mode(recipe: Recipe) -> str:
    """Return the W&B mode: ``WANDB_MODE`` from the environment if set, else the recipe's.

    The mode is always explicit: W&B started with no mode and no API key waits at an
    interactive prompt, so metods never lets it choose.
    """
    return os.environ.get("WANDB_MODE") or recipe.logger.wandb.mode


class _AtomicCSVWriter(ExperimentWriter):
    """Lightning's CSV writer, rewriting ``metrics.csv`` atomically at each flush.

    Lightning appends rows in place, so a full disk can leave half a row and lose the ones in
    memory. Here each flush writes the whole file under a temporary name and renames it; when
    the write fails, the file keeps its earlier rows, the new rows stay in memory for the next
    flush, and a warning says so.
    """

    def save(self) -> None:
        """Write every row logged so far to ``metrics.csv`` atomically."""
        if not self.metrics:
            return
        self._record_new_keys()
        rows: list[dict[str, Any]] = []
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                rows = list(csv.DictReader(file))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows([*rows, *self.metrics])
        try:
            write_text_atomic(Path(self.metrics_file_path), text.getvalue())
        except WriteError as error:
            warnings.warn(f"{error}; the rows are kept and written at the next flush", stacklevel=2)
            return
        self.metrics = []


class AtomicCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` with :class:`_AtomicCSVWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AtomicCSVWriter:  # type: ignore[override]  # a subclass of it
        """The CSV writer of this run's ``logs/version_K``."""
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AtomicCSVWriter(log_dir=self.log_dir)
        return self._experiment  # type: ignore[return-value]


def create_loggers(recipe: Recipe, run_dir: Path, rank_zero: bool = True) -> list[Logger]:
    """Return the run's loggers; the W&B run id is kept in the run directory for resuming.

    Only global rank 0 (``rank_zero``) writes the id file: W&B logs from rank 0 alone, and
    nodes started at the same moment must not race to write different ids.
    """
    loggers: list[Logger] = []
    if recipe.logger.csv:
        logs = RunFolder(run_dir).logs
        loggers.append(AtomicCSVLogger(save_dir=logs.parent, name=logs.name))
    mode = wandb_mode(recipe)
    if mode != "disabled":
        if mode != "online":
            # Offline runs need no network at all: no telemetry look-up either.
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        id_file = RunFolder(run_dir).wandb_id
        if id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            run_id = secrets.token_hex(4)
            if rank_zero:
                write_text_atomic(id_file, run_id + "\n")
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
