"""Meta-test a trained run on held-out tasks and report the task family's own metrics."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from metods_core.agent import Agent
from metods_core.components import create_agent, create_task_sampler
from metods_core.errors import MetodsError
from metods_core.interfaces import Split, TaskBatch, TaskSampler
from metods_core.recipe import Recipe, pydantic_problems
from metods_core.recipe.schema import RecipeError
from metods_core.rollout import run_lifetimes
from metods_core.run_folder import RunFolder, metric_key
from metods_core.statistics import mean_and_ci95
from metods_core.training.atomic import write_text_atomic
from metods_core.training.checkpoints import (
    checkpoint_outer_step,
    find_resume_checkpoint,
    named_checkpoint,
    read_checkpoint,
)
from metods_core.training.run_dir import read_run_recipe
from metods_core.training.seeding import derive_seed
from metods_core.training.task_state import restore_state, restore_task_state

AGENT_PREFIX = "agent."
"""The agent's parameters in a checkpoint's ``state_dict`` (the training module's attribute)."""


def overrides_tag(overrides: Sequence[str]) -> str:
    """Return the file-name tag of an evaluation's overrides: ``""`` when there are none.

    ``["task.impair_actuator=3"]`` gives ``"-task.impair_actuator=3"``, so that the impaired
    evaluation writes ``evaluation-task.impair_actuator=3.json`` beside, not over, the plain
    summary. Characters unsafe in file names become ``_``; a long tag is shortened
    and made unique by a hash of the overrides.
    """
    if not overrides:
        return ""
    text = ",".join(overrides)
    tag = re.sub(r"[^A-Za-z0-9._=+,-]", "_", text)
    if len(tag) > 80:
        tag = f"{tag[:60]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return f"-{tag}"


def checkpoint_tag(run: RunFolder, checkpoint: Path | None) -> str:
    """The file-name tag of an evaluation of ``checkpoint``: none for the run's last one,
    ``-best`` for ``best.ckpt``, the file's stem for any other (``-step=000116``), so that
    evaluating an earlier checkpoint never overwrites the last one's files."""
    if checkpoint is None or checkpoint.resolve() == run.last_checkpoint.resolve():
        return ""
    if checkpoint.resolve() == run.best_checkpoint.resolve():
        return "-best"
    return overrides_tag([checkpoint.stem])


def load_trained_agent(
    recipe: Recipe, sampler: TaskSampler, checkpoint: Path, run_dir: Path
) -> Agent:
    """Build the recipe's agent for ``sampler`` and load its parameters from ``checkpoint``.

    Only the agent is built: the meta-optimizer's state in the checkpoint is not needed here.
    The sampler's own saved state (the MuJoCo observation statistics) is restored into it.
    """
    return agent_from_checkpoint(recipe, sampler, read_checkpoint(checkpoint), checkpoint, run_dir)


def agent_from_checkpoint(
    recipe: Recipe, sampler: TaskSampler, loaded: dict[str, Any], checkpoint: Path, run_dir: Path
) -> Agent:
    """:func:`load_trained_agent` for a checkpoint already read (``loaded``, from
    ``checkpoint``)."""
    agent = create_agent(recipe, sampler)
    restore_task_state(sampler, loaded)  # e.g. the observation statistics of training
    state = loaded["state_dict"]
    weights = {k[len(AGENT_PREFIX) :]: v for k, v in state.items() if k.startswith(AGENT_PREFIX)}
    try:
        agent.load_state_dict(weights)
    except RuntimeError as error:
        raise MetodsError(
            f"checkpoint {checkpoint} does not fit the recipe of {run_dir} (was "
            f"{RunFolder(run_dir).recipe.name} edited, or an override changed the model?): "
            f"{str(error).splitlines()[0]}"
        ) from None
    return agent.eval()


def condition_sampler(recipe: Recipe, condition: str, changes: dict[str, Any]) -> TaskSampler:
    """Build the task sampler of an evaluation condition: the recipe's task config with
    ``changes``, validated by the plugin's ``Config`` like any recipe value.

    Raises:
        RecipeError: the plugin's ``evaluation_conditions`` gave values its ``Config`` refuses.
    """
    config_cls = type(recipe.task.config)
    data = {**recipe.task.config.model_dump(), **changes}
    try:
        config = config_cls.model_validate(data)
    except ValidationError as error:
        problems = pydantic_problems(error, config_cls, "task")
        raise RecipeError(problems, f"evaluation condition {condition!r}") from None
    return recipe.task.cls(config)  # type: ignore[no-any-return]


@torch.no_grad()
def meta_test(
    agent: Agent,
    sampler: TaskSampler,
    episodes: int,
    batch_tasks: int,
    greedy: bool,
    seed: int,
    split: Split = "test",
    freeze_memory: int | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``episodes`` lifetimes of ``sampler``'s ``split`` (held-out tasks by default); return
    each metric concatenated over tasks (each ``(tasks,)`` or ``(tasks, K)``).

    The tasks of all ``episodes`` lifetimes are drawn in one ``sampler.sample`` call, so a finite
    split is covered evenly (Meta-World: 50 lifetimes meet each of the 50 held-out goals once),
    and are run ``batch_tasks`` at a time; the batch size never changes which tasks are run.

    The sampler's statistics are frozen first (:meth:`TaskSampler.freeze_statistics`): meta-test
    lifetimes, on either split, see the checkpoint's and never change them.

    ``freeze_memory`` K holds the agent's memory from step K of each lifetime on (a lesion,
    see :func:`run_lifetimes`).

    Raises:
        MetodsError: ``freeze_memory`` outside the lifetime (checked before any step is run).
    """
    sampler.freeze_statistics()
    device = next(agent.parameters()).device  # tasks and actions follow the agent
    stream = ("meta-test",) if split == "test" else ("meta-test", split)
    generator = torch.Generator().manual_seed(derive_seed(seed, *stream))
    everything = sampler.sample(episodes, split, generator)
    collected: dict[str, list[torch.Tensor]] = {}
    for start in range(0, episodes, batch_tasks):
        stop = min(start + batch_tasks, episodes)
        part = everything
        if (start, stop) != (0, episodes):
            part = everything.select(start, stop, derive_seed(everything.seed, "part", start))
        tasks = _tasks_on(part, device)
        env = sampler.make_env(tasks)
        if freeze_memory is not None and not 0 <= freeze_memory < env.lifetime_steps:
            env.close()
            raise MetodsError(
                f"evaluate: --freeze-memory must be a step of the lifetime, from 0 to "
                f"{env.lifetime_steps - 1} here, got {freeze_memory}"
            )
        action_generator = torch.Generator(device=device)
        action_generator.manual_seed(derive_seed(seed, "actions", tasks.seed))
        lifetimes = run_lifetimes(
            agent, env, action_generator, greedy=greedy, freeze_memory=freeze_memory
        )
        env.close()
        for name, value in lifetimes.metrics.items():
            collected.setdefault(name, []).append(value.detach().cpu().float())
    return {name: torch.cat(parts) for name, parts in collected.items()}


def summarise(metrics: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Return mean, 95 % CI and count of each per-task metric, and per-index curves.

    ``episode_reward`` is reported as ``mean_reward``; a curve metric ``(tasks, K)`` gives
    ``<name>`` (a list of K means) and ``<name>_ci95``.
    """
    summary: dict[str, Any] = {}
    for name, values in metrics.items():
        key = metric_key(name)
        if values.dim() == 1:
            mean, ci, count = mean_and_ci95(values)
            summary[key], summary[f"{key}_ci95"], summary[f"{key}_n"] = mean, ci, count
        else:
            stats = [mean_and_ci95(values[:, k]) for k in range(values.shape[1])]
            summary[key] = [s[0] for s in stats]
            summary[f"{key}_ci95"] = [s[1] for s in stats]
    return summary


def _without_nan(value: Any) -> Any:
    """Replace NaN (an undefined metric) by None, so the JSON is standard (null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_without_nan(item) for item in value]
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    return value


def evaluate_run(
    run_dir: Path,
    episodes: int | None = None,
    overrides: Sequence[str] = (),
    greedy: bool | None = None,
    checkpoint: Path | str | None = None,
    device: str | None = None,
    split: Split = "test",
    freeze_memory: int | None = None,
) -> dict[str, Any]:
    """Meta-test the run's last checkpoint (or ``checkpoint``) on held-out tasks; write JSON and
    PNG plots. ``device`` (e.g. ``"cuda"``) runs the agent and the tasks there; default: CPU.

    ``split`` ``"train"`` meta-tests on the tasks the run trained on instead (beside the held-out
    figure it measures the generalisation gap); its files are tagged ``-train``. ``split``
    ``"validation"`` meta-tests on the task's validation split (tagged ``-validation``).

    ``freeze_memory`` K is a lesion: the agent's memory (plastic synapses, recurrent state) is
    held from step K of every lifetime on, so it stores nothing after its first K steps; K = 0
    is the memoryless policy. Its files are tagged ``-freeze_memory=K``.

    ``overrides`` change the test conditions (``task.impair_actuator=3``); they never touch the
    checkpoint. ``checkpoint`` ``"best"`` is the run's ``best.ckpt`` (``trainer.keep_best``),
    whose files are tagged ``-best``; any other checkpoint but the last tags them with its file
    name (``-step=000116``, see :func:`checkpoint_tag`). The summary records the checkpoint's
    path and its ``outer_step``. Returns the summary also written to the run folder's
    evaluation file (:meth:`RunFolder.evaluation`), tagged with the overrides (see
    :func:`overrides_tag`); the
    curves' PNG and CSV files carry the same tag, so no evaluation overwrites another. The JSON
    file is written atomically, and only when the evaluation produced metrics.

    Raises:
        MetodsError: ``episodes`` below 1, no checkpoint, one that cannot be trusted, a
            validation split the task does not have, or ``freeze_memory`` outside the lifetime.
    """
    if episodes is not None and episodes < 1:
        raise MetodsError(f"evaluate: --episodes must be at least 1, got {episodes}")
    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    path = named_checkpoint(run_dir, checkpoint)
    tag = checkpoint_tag(run, path) + ("" if split == "test" else f"-{split}")
    tag += overrides_tag(overrides)
    if freeze_memory is not None:
        tag += f"-freeze_memory={freeze_memory}"
    recipe = read_run_recipe(run_dir, list(overrides))
    sampler = create_task_sampler(recipe)
    if split == "validation" and not sampler.has_validation_split():
        raise MetodsError(
            f"evaluate --split validation: the task of {run_dir} has no validation split (on "
            "Meta-World, a run trained with task.validation_tasks above 0 has one)"
        )
    resolved = find_resume_checkpoint(run_dir, path)
    loaded = read_checkpoint(resolved)
    agent = agent_from_checkpoint(recipe, sampler, loaded, resolved, run_dir)
    if device is not None:
        agent.to(device)
    episodes = recipe.evaluation.episodes if episodes is None else episodes
    greedy = recipe.evaluation.greedy if greedy is None else greedy
    batch_tasks = recipe.evaluation.batch_tasks
    metrics = meta_test(
        agent, sampler, episodes, batch_tasks, greedy, recipe.seed, split, freeze_memory
    )
    if not metrics:
        raise MetodsError(
            f"the evaluation of {run_dir} produced no metrics; {run.evaluation(tag).name} was "
            "left as it was"
        )
    summary = summarise(metrics)
    for condition, changes in sampler.evaluation_conditions().items():
        other = condition_sampler(recipe, condition, changes)
        if callable(getattr(sampler, "state_dict", None)):
            restore_state(other, {"sampler": sampler.state_dict()})  # type: ignore[attr-defined]
        extra = meta_test(
            agent, other, episodes, batch_tasks, greedy, recipe.seed, split, freeze_memory
        )
        summary.update({f"{condition}/{k}": v for k, v in summarise(extra).items()})
    summary.update(
        {
            "run_dir": str(run_dir),
            "checkpoint": str(resolved),
            "outer_step": checkpoint_outer_step(loaded),
            "episodes": episodes,
            "split": split,
            "greedy": greedy,
            "overrides": list(overrides),
            "freeze_memory": freeze_memory,
            "main_metric": sampler.main_metric(),
        }
    )
    summary = _without_nan(summary)
    write_text_atomic(run.evaluation(tag), json.dumps(summary, indent=2, allow_nan=False) + "\n")
    from metods_core.plots import plot_curves, plot_training_curve

    summary["plots"] = [
        str(path)
        for path in [plot_training_curve(run_dir), *plot_curves(run_dir, summary, metrics, tag)]
        if path is not None
    ]
    return summary


def _tasks_on(tasks: TaskBatch, device: torch.device) -> TaskBatch:
    """Return ``tasks`` with its tensors on ``device``, as the Trainer moves a training batch.

    Task samplers draw on the CPU, so on the CPU there is nothing to move, and Lightning (whose
    ``move_data_to_device`` handles any batch a plugin defines) is imported only for another
    device: ``metods evaluate`` on the CPU starts without loading it.
    """
    if device.type == "cpu":
        return tasks
    from lightning.pytorch.utilities import move_data_to_device

    moved: TaskBatch = move_data_to_device(tasks, device)
    return moved
