"""Train a tiny recipe with DDP on 2 CPU processes and record what each rank saw.

Run as ``python ddp_check.py RECIPE RUN_DIR [key=value ...]`` (the overrides come after the
script's own, so ``trainer.devices=1 trainer.num_nodes=2`` turns it into one node of two).
Lightning's DDP launcher re-runs this script for rank 1, so everything happens under
``if __name__ == "__main__"``. Each rank writes
``rank<K>.json`` with a fingerprint of every task batch it trained on and a checksum of its
meta-parameters at the end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class RecordRank(Callback):
    """Record task fingerprints per step, and the final parameters, of this rank."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.tasks: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, module, batch, batch_idx: int) -> None:
        self.tasks.append(float(batch.objects.double().sum()))

    def on_train_end(self, trainer: L.Trainer, module) -> None:
        vector = torch.cat([p.detach().double().flatten() for p in module.agent.parameters()])
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "tasks": self.tasks,
            "parameters": vector.tolist(),
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    from metods_core.recipe import load_recipe
    from metods_core.training import train_recipe

    recipe_path, run_dir = sys.argv[1], Path(sys.argv[2])
    overrides = [
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.accelerator=cpu",
        "trainer.max_steps=3",
        "data.batch_tasks=4",
        "plasticity.recursion_steps=1",
        "logger.wandb.mode=disabled",
        "trainer.compile=false",
        *sys.argv[3:],
    ]
    recipe = load_recipe(recipe_path, overrides)
    train_recipe(recipe, run_dir, callbacks=[RecordRank(run_dir)])
