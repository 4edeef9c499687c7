"""What the ablation tests share: the recipe and tiny overrides they train real runs with (a
few seconds each, on CPU, nothing uploaded), and a run folder made to look trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metods_core.ablation.plan import PlannedRun
from metods_core.recipe import load_recipe, recipe_to_yaml
from metods_core.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
HARLOW = ROOT / "recipes" / "harlow" / "metods.yaml"
TINY = [
    "data.batch_tasks=2",
    "logger.wandb.mode=disabled",
    "trainer.compile=false",
    "evaluation.episodes=4",
    "evaluation.batch_tasks=4",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "trainer.checkpoint_every_n_steps=1",
]
"""Two tasks per outer step, eager, four held-out lifetimes, a checkpoint and a log row at
every outer step; the caller sets ``trainer.max_steps``."""


def place_trained_run(run: PlannedRun) -> RunFolder:
    """Make ``run``'s folder look trained to its plan's budget (its recipe and a last checkpoint
    at ``max_steps``, no evaluation yet), as ``inspect_run`` reads it; return the folder."""
    folder = RunFolder(run.run_dir)
    folder.checkpoints.mkdir(parents=True)
    folder.recipe.write_text(recipe_to_yaml(load_recipe(run.recipe, run.overrides)))
    torch.save({"state_dict": {}, "global_step": run.max_steps}, folder.last_checkpoint)
    return folder


def planned_evaluation(run: PlannedRun) -> dict[str, Any]:
    """The fields of an evaluation summary that ``inspect_run`` compares with the plan."""
    return {"episodes": run.episodes, "greedy": run.greedy, "overrides": []}
