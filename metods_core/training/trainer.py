"""Train and resume runs: recipe -> Lightning Trainer -> run directory."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback

from metods_core.errors import MetodsError, TrainingInterrupted
from metods_core.recipe import Recipe
from metods_core.training.checkpoint_callbacks import (
    OuterStepCheckpoints,
    create_checkpoint_callbacks,
)
from metods_core.training.checkpoint_io import AtomicCheckpointIO
from metods_core.training.checkpoints import (
    checkpoint_outer_step,
    find_resume_checkpoint,
    read_checkpoint,
)
from metods_core.training.data import TaskDataModule
from metods_core.training.loggers import create_loggers
from metods_core.training.module import MetaLearningModule
from metods_core.training.periodic_meta_test import PeriodicMetaTest
from metods_core.training.progress import OuterStepProgressBar
from metods_core.training.regroup import ApplyOptimizerSettings
from metods_core.training.resume import check_resume_changes, record_resume
from metods_core.training.run_dir import (
    check_new_run_dir,
    default_run_dir,
    read_run_recipe,
    write_run_files,
)
from metods_core.training.schedule import periodic_every_n_steps

_RUN_DIR_ENV = "METODS_RUN_DIR"
"""Set by the launching process so that DDP ranks started later write to the same run."""


def _is_allocation_error(error: BaseException) -> bool:
    text = str(error)
    return isinstance(error, MemoryError) or "allocate" in text or "out of memory" in text


@contextmanager
def _explain_allocation_errors(recipe: Recipe) -> Iterator[None]:
    """Turn a failed allocation (a size too large for this machine) into one clear error."""
    try:
        yield
    except (RuntimeError, MemoryError) as error:
        if not _is_allocation_error(error):
            raise
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else "MemoryError"
        raise MetodsError(
            f"the run does not fit in this machine's memory ({first}); lower agent.hidden "
            f"(now {recipe.agent.hidden}), data.batch_tasks (now {recipe.data.batch_tasks}) or "
            "the task's size"
        ) from None


def _build_module(recipe: Recipe) -> MetaLearningModule:
    with _explain_allocation_errors(recipe):
        return MetaLearningModule(recipe)


@contextmanager
def _stop_on_sigint(checkpoints: OuterStepCheckpoints) -> Iterator[None]:
    """On the first Ctrl+C, finish the outer step, save it and stop; a second one kills."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handle(signum: int, frame: FrameType | None) -> None:
        checkpoints.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _global_rank() -> int:
    """Return this process's rank as Lightning's launcher set it (0 before any launch).

    Before the Trainer exists Lightning knows it from RANK, LOCAL_RANK or SLURM_PROCID. A node
    started with Lightning's own variables (NODE_RANK or GROUP_RANK, and LOCAL_RANK) reads as
    rank LOCAL_RANK on every node: on a node other than 0 it is counted as a rank after them.
    """
    rank = int(getattr(rank_zero_only, "rank", 0))
    node = os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK") or "0"
    if not {"RANK", "SLURM_PROCID"} & set(os.environ) and node.isdigit() and int(node) > 0:
        return rank + 1  # some rank of a later node: never rank 0
    return rank


def _processes_per_node(recipe: Recipe) -> int:
    devices = recipe.trainer.devices
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, int):
        return max(devices, 1)
    return 1 if devices == "auto" else max(int(devices) if devices.isdigit() else 1, 1)


def _set_threads(recipe: Recipe) -> None:
    """Give each process its share of the cores: oversubscription slows CPU runs ~100x."""
    threads = recipe.trainer.num_threads
    if threads is None and _processes_per_node(recipe) > 1:
        threads = max(1, (os.cpu_count() or 1) // _processes_per_node(recipe))
    if threads is not None:
        torch.set_num_threads(threads)


def create_trainer(recipe: Recipe, run_dir: Path, callbacks: Sequence[Callback] = ()) -> L.Trainer:
    """Return the Lightning Trainer the recipe asks for, logging and saving into ``run_dir``."""
    config = recipe.trainer
    periodic = periodic_every_n_steps(recipe, "test") is not None
    validating = periodic_every_n_steps(recipe, "validation") is not None
    # before the checkpoints: best.ckpt may rank by it, and they save the state that includes it
    validation = PeriodicMetaTest(recipe, "validation") if validating else None
    return L.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=config.precision,  # type: ignore[arg-type]  # validated by Lightning itself
        max_steps=-1,  # the module stops at trainer.max_steps *outer* steps (its own clock)
        max_epochs=-1,
        log_every_n_steps=config.log_every_n_steps,
        logger=create_loggers(recipe, run_dir, rank_zero=_global_rank() == 0),
        plugins=[AtomicCheckpointIO()],  # atomic writes, weights_only=True restores
        callbacks=[
            *([validation] if validation is not None else []),
            *create_checkpoint_callbacks(
                run_dir,
                config.checkpoint_every_n_steps,
                config.best_window if config.keep_best else None,
                config.best_metric,
                validation,
            ),
            OuterStepProgressBar(config.max_steps, refresh_rate=config.log_every_n_steps),
            # after the checkpoints: an outer step is saved before its meta-test starts
            *([PeriodicMetaTest(recipe)] if periodic else []),
            *callbacks,
        ],
        default_root_dir=run_dir,
        enable_checkpointing=False,  # OuterStepCheckpoints saves on the outer-step clock
        use_distributed_sampler=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def _close_progress_bar(trainer: L.Trainer) -> None:
    bar = getattr(trainer.progress_bar_callback, "_train_progress_bar", None)
    if bar is not None:
        bar.close()


def _fit(
    module: MetaLearningModule,
    run_dir: Path,
    checkpoint: Path | None,
    callbacks: Sequence[Callback],
) -> Path:
    recipe = module.recipe
    os.environ[_RUN_DIR_ENV] = str(run_dir)
    try:
        data = TaskDataModule(module.sampler, recipe.data.batch_tasks, recipe.seed)
        trainer = create_trainer(recipe, run_dir, callbacks)
        saver = next(c for c in trainer.callbacks if isinstance(c, OuterStepCheckpoints))  # type: ignore[attr-defined]
        with _stop_on_sigint(saver), _explain_allocation_errors(recipe):
            try:
                trainer.fit(module, datamodule=data, ckpt_path=checkpoint, weights_only=True)
            except BaseException:
                _close_progress_bar(trainer)  # so that the error starts a line of its own
                raise
    finally:
        os.environ.pop(_RUN_DIR_ENV, None)
    if saver.interrupted_at is not None:
        raise TrainingInterrupted(run_dir, saver.interrupted_at)
    return run_dir


def train_recipe(
    recipe: Recipe, run_dir: Path | None = None, callbacks: Sequence[Callback] = ()
) -> Path:
    """Meta-train ``recipe`` in a new run directory and return the directory.

    Raises:
        MetodsError: ``run_dir`` is a file, already holds a run (resume it instead), or holds
            other files; nothing is overwritten.
        TrainingInterrupted: Ctrl+C; the outer step reached is saved.
    """
    inherited = os.environ.get(_RUN_DIR_ENV)
    run_dir = Path(inherited) if inherited else (run_dir or default_run_dir(recipe))
    if not inherited and _global_rank() == 0:  # the other ranks of a multi-node run find
        check_new_run_dir(run_dir)  # rank 0's files there: they check and write nothing
    _set_threads(recipe)
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    module = _build_module(recipe)
    if _global_rank() == 0 and not inherited:
        write_run_files(run_dir, recipe)
    return _fit(module, run_dir, None, callbacks)


def resume_run(
    run_dir: Path,
    overrides: Sequence[str] = (),
    checkpoint: Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Continue the run in ``run_dir`` from its latest checkpoint (or ``checkpoint``).

    ``overrides`` may change how the run continues (see ``metods_core.training.resume``):
    they are checked against the run's recipe and the checkpoint, then recorded in
    ``resumes.yaml``; a changed learning rate is applied to the restored optimizer.

    Raises:
        MetodsError: a field that may not change was overridden, the budget is already spent,
            or the checkpoint does not fit; nothing was written.
    """
    current = read_run_recipe(run_dir)
    recipe = read_run_recipe(run_dir, list(overrides))
    path = find_resume_checkpoint(run_dir, checkpoint)
    loaded = read_checkpoint(path)
    step = checkpoint_outer_step(loaded)
    check_resume_changes(current, recipe, step)
    _set_threads(recipe)
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    module = _build_module(recipe)
    try:
        module.load_state_dict(loaded["state_dict"])
    except RuntimeError as error:
        raise MetodsError(
            f"checkpoint {path} does not fit the recipe with overrides {list(overrides)}: "
            f"{str(error).splitlines()[0]} Only overrides that keep the model's shape can "
            "change a run in progress; start a new run for the others."
        ) from None
    if _global_rank() == 0 and not os.environ.get(_RUN_DIR_ENV):
        record_resume(run_dir, list(overrides), step, path)
    return _fit(module, run_dir, path, [ApplyOptimizerSettings(), *callbacks])
