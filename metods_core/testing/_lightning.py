"""Tiny real training runs for the meta-optimizer suite (2-process DDP runs: ``_ddp_worker``).

Each run builds a ``Recipe`` of the fakes (``metods_core.testing.fakes``) named through the
``module:Class`` escape hatch, trains it with ``metods_core.training`` in a temporary run folder
on the CPU (no W&B, no CSV, no compile, one thread) and returns what the checks compare: the
last checkpoint's module and optimizer state, every checkpoint's outer step, and how many times
``MetaOptimizer.training_step`` was called. The caller's global RNGs, thread count and seed
environment are restored afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from metods_core.interfaces import MetaOptimizer
from metods_core.recipe import Recipe, validate_recipe
from metods_core.testing._common import BATCH

MAX_STEPS = 4
"""Outer steps of the tiny runs (``trainer.max_steps``)."""
RESUME_AT = 2
"""Where the interrupted run stops (its checkpoint cadence too) before it is resumed."""
HIDDEN = 6
"""Width N of the tiny agent."""
_FAKES = "metods_core.testing.fakes"


def component_name(cls: type) -> str:
    """Return the ``module:Class`` name under which a recipe (and a DDP rank) imports ``cls``."""
    assert "<locals>" not in cls.__qualname__, (
        f"{cls.__qualname__} is defined inside a function: the trainer must import it by name "
        "(and DDP ranks re-import it), so define it at module level"
    )
    return f"{cls.__module__}:{cls.__qualname__}"


def tiny_recipe_data(
    cls: type[MetaOptimizer], config: dict[str, Any], max_steps: int, devices: int = 1
) -> dict[str, Any]:
    """Return the plain data of a tiny CPU recipe that trains ``cls`` on the fakes."""
    return {
        "seed": 0,
        "task": {"name": f"{_FAKES}:FakeTasks"},
        "agent": {"hidden": HIDDEN},
        "plasticity": {"name": f"{_FAKES}:FakeRule"},
        "readout": {"name": f"{_FAKES}:FakeReadout"},
        "meta_optimizer": {"name": component_name(cls), **config},
        "data": {"batch_tasks": BATCH},
        "trainer": {
            "max_steps": max_steps,
            "accelerator": "cpu",
            "devices": devices,
            "strategy": "ddp" if devices > 1 else "auto",
            "num_threads": 1,
            "compile": False,
            "log_every_n_steps": 1,
            "checkpoint_every_n_steps": RESUME_AT,
        },
        "logger": {"wandb": {"mode": "disabled"}, "csv": False},
    }


def tiny_recipe(
    cls: type[MetaOptimizer], config: dict[str, Any], max_steps: int, devices: int = 1
) -> Recipe:
    """Return the validated tiny recipe of ``tiny_recipe_data``."""
    return validate_recipe(tiny_recipe_data(cls, config, max_steps, devices))


class CountOuterSteps(Callback):
    """Count ``meta_optimizer.training_step`` calls; keep the agent's state at fit start."""

    def __init__(self) -> None:
        self.calls = 0
        self.tasks: list[int] = []
        self.initial: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Wrap the meta-optimizer's ``training_step`` with a counter."""
        from metods_core.training import MetaLearningModule

        assert isinstance(pl_module, MetaLearningModule)
        self.initial = {k: v.detach().clone() for k, v in pl_module.agent.state_dict().items()}
        meta_optimizer = pl_module.meta_optimizer
        original = meta_optimizer.training_step

        def counted(agent: Any, batch: Any) -> dict[str, torch.Tensor]:
            self.calls += 1
            self.tasks.append(int(batch.tasks.seed))
            return original(agent, batch)

        meta_optimizer.training_step = counted  # type: ignore[method-assign]  # count calls


@dataclass(frozen=True)
class TinyRun:
    """What a tiny run left behind."""

    initial: dict[str, torch.Tensor]
    """The agent's state dict when training started."""
    final: dict[str, Any]
    """The last checkpoint (``last.ckpt``), loaded on the CPU."""
    outer_steps: dict[str, int]
    """Outer step saved in each checkpoint file that is left, by file name."""
    calls: int
    """How many times ``training_step`` was called (in the last fit only)."""


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Restore the global RNGs, threads and seed variables; quieten Lightning's chatter."""
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), None
    numpy_state = np.random.get_state()
    threads = torch.get_num_threads()
    environ = {key: os.environ.get(key) for key in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"lightning\..*")
            yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_num_threads(threads)
        for key, value in environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _collect(run_dir: Path, counter: CountOuterSteps) -> TinyRun:
    from metods_core.run_folder import RunFolder
    from metods_core.training.checkpoints import checkpoint_outer_step, read_checkpoint

    folder = RunFolder(run_dir).checkpoints
    outer_steps = {
        path.name: checkpoint_outer_step(read_checkpoint(path))
        for path in sorted(folder.glob("*.ckpt"))
    }
    final = read_checkpoint(RunFolder(run_dir).last_checkpoint)
    return TinyRun(counter.initial, final, outer_steps, counter.calls)


def run_tiny(cls: type[MetaOptimizer], config: dict[str, Any], max_steps: int) -> TinyRun:
    """Train ``cls`` for ``max_steps`` outer steps in a fresh temporary run folder."""
    from metods_core.training import train_recipe

    recipe = tiny_recipe(cls, config, max_steps)
    counter = CountOuterSteps()
    with tempfile.TemporaryDirectory(prefix="metods-conformance-") as folder, isolated():
        run_dir = Path(folder) / "run"
        train_recipe(recipe, run_dir, callbacks=[counter])
        return _collect(run_dir, counter)


@functools.lru_cache(maxsize=4)
def _uninterrupted(cls: type[MetaOptimizer], config_json: str) -> TinyRun:
    return run_tiny(cls, json.loads(config_json), MAX_STEPS)


def uninterrupted_run(cls: type[MetaOptimizer], config: dict[str, Any]) -> TinyRun:
    """Return the run of ``MAX_STEPS`` outer steps (cached: several checks read one run)."""
    return _uninterrupted(cls, json.dumps(config, sort_keys=True, default=str))


def stopped_and_resumed_run(cls: type[MetaOptimizer], config: dict[str, Any]) -> TinyRun:
    """Train to ``RESUME_AT`` outer steps, then resume the same run folder to ``MAX_STEPS``."""
    from metods_core.training import resume_run, train_recipe

    counter = CountOuterSteps()
    with tempfile.TemporaryDirectory(prefix="metods-conformance-") as folder, isolated():
        run_dir = Path(folder) / "run"
        train_recipe(tiny_recipe(cls, config, RESUME_AT), run_dir)
        resume_run(run_dir, [f"trainer.max_steps={MAX_STEPS}"], callbacks=[counter])
        return _collect(run_dir, counter)
