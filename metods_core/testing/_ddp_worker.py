"""Train a tiny recipe with 2-process CPU DDP and save what each rank ended with.

Run as ``python -m metods_core.testing._ddp_worker RECIPE_JSON OUT_DIR`` (``run_ddp`` in
``metods_core.testing._lightning`` does). Lightning's DDP launcher re-runs this module for
rank 1, so nothing happens at import. Each rank writes ``rank<K>.pt``: its agent's state dict,
the task seeds it trained on, its ``training_step`` calls and the world size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch

from metods_core.testing._lightning import CountOuterSteps


class SaveRank(CountOuterSteps):
    """Count outer steps, then save this rank's agent state when training ends."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write ``rank<K>.pt`` into the output folder."""
        from metods_core.training import MetaLearningModule

        assert isinstance(pl_module, MetaLearningModule)
        record = {
            "world_size": trainer.world_size,
            "calls": self.calls,
            "tasks": self.tasks,
            "initial": self.initial,
            "final": {k: v.detach().clone() for k, v in pl_module.agent.state_dict().items()},
        }
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


def main(recipe_json: str, out: Path) -> None:
    """Train the recipe in ``out/run`` and record each rank in ``out``."""
    from metods_core.recipe import validate_recipe
    from metods_core.training import train_recipe

    torch.set_num_threads(1)
    recipe = validate_recipe(json.loads(Path(recipe_json).read_text()))
    train_recipe(recipe, out / "run", callbacks=[SaveRank(out)])


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
