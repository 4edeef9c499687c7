"""Train the ES recipe with DDP on 2 CPU processes; record each rank's members and parameters.

Run as ``python es_ddp_check.py RECIPE RUN_DIR`` with ``tests/helpers`` on ``PYTHONPATH``:
it reuses ``ddp_check.RecordRank`` (task fingerprints and final parameters per rank) and adds
the ES members each rank evaluated at every step (``members<K>.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
from ddp_check import RecordRank
from lightning.pytorch.callbacks import Callback


class RecordMembers(Callback):
    """Record the population members this rank evaluated at each outer step."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.members: list[list[int]] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.members.append(list(module.meta_optimizer.last_members))

    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        path = self.out / f"members{trainer.global_rank}.json"
        path.write_text(json.dumps(self.members))


if __name__ == "__main__":
    from metods_core.recipe import load_recipe
    from metods_core.training import train_recipe

    recipe_path, run_dir = sys.argv[1], Path(sys.argv[2])
    overrides = [
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.accelerator=cpu",
        "trainer.max_steps=3",
        "trainer.num_threads=1",
        "data.batch_tasks=4",
        "plasticity.recursion_steps=1",
        "meta_optimizer.pairs=4",
        "logger.wandb.mode=disabled",
        "trainer.compile=false",
    ]
    recipe = load_recipe(recipe_path, overrides)
    train_recipe(recipe, run_dir, callbacks=[RecordRank(run_dir), RecordMembers(run_dir)])
