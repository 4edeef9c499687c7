"""Train a tiny recipe with 2-process CPU DDP and save what each rank ended with.

``run_ddp`` launches ``python -m metods_core.testing._ddp_worker RECIPE_JSON OUT_DIR`` and reads
the ranks' records back. Lightning's DDP launcher re-runs this module for rank 1, so nothing
happens at import. Each rank writes ``rank<K>.pt``: its agent's state dict,
the task seeds it trained on, its ``training_step`` calls and the world size.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch

from metods_core.interfaces import MetaOptimizer
from metods_core.testing._lightning import (
    MAX_STEPS,
    CountOuterSteps,
    tiny_recipe,
    tiny_recipe_data,
)


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


DDP_TIMEOUT_S = 300
"""Longest a 2-process DDP run may take before it is killed (start-up is about 5 s)."""


def _import_root(cls: type) -> str | None:
    """Return the folder to put on ``sys.path`` so that ``cls``'s module imports by name."""
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if file is None:
        return None
    path = Path(file).resolve()
    depth = cls.__module__.count(".") + (1 if path.name == "__init__.py" else 0)
    return str(path.parents[depth])


def run_ddp(cls: type[MetaOptimizer], config: dict[str, Any]) -> list[dict[str, Any]]:
    """Train ``cls`` for ``MAX_STEPS`` outer steps on 2 CPU processes; return each rank's record.

    The worker (``python -m metods_core.testing._ddp_worker``) imports ``cls`` by its module
    name, with that module's folder put on ``PYTHONPATH``; one torch thread per rank.
    """
    assert cls.__module__ != "__main__", (
        f"{cls.__qualname__} is defined in the script being run (__main__), which DDP ranks "
        "cannot import by name: define it in an importable module"
    )
    data = tiny_recipe_data(cls, config, MAX_STEPS, devices=2)
    tiny_recipe(cls, config, MAX_STEPS, devices=2)  # fail here, readably, on a bad config
    root = _import_root(cls)
    with tempfile.TemporaryDirectory(prefix="metods-conformance-ddp-") as folder:
        out = Path(folder)
        (out / "recipe.json").write_text(json.dumps(data))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
        env.pop("METODS_RUN_DIR", None)
        if root is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "metods_core.testing._ddp_worker", "recipe.json", "."]
        process = subprocess.Popen(
            command,
            cwd=out,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a timeout ends rank 1 too
        )
        try:
            output, _ = process.communicate(timeout=DDP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            raise AssertionError(
                f"2-process DDP training did not end within {DDP_TIMEOUT_S} s; its output "
                f"ended with:\n{output[-3000:]}"
            ) from None
        records = [out / f"rank{rank}.pt" for rank in range(2)]
        assert process.returncode == 0 and all(path.is_file() for path in records), (
            f"2-process DDP training failed (exit code {process.returncode}); its output "
            f"ended with:\n{output[-3000:]}"
        )
        return [torch.load(path, weights_only=True) for path in records]


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
