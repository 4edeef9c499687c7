"""What a resume may change, and the record of every resume (the optimizer's changed settings are
applied by ``regroup.ApplyOptimizerSettings``).

A resumed run continues the same experiment, so its identity cannot change: the seed, the task,
the agent's shape and the components (every field outside the list below). What *may* change,
and takes effect, is how the run continues: the budget and the Trainer's settings
(``trainer.*``), the meta-optimizer's hyper-parameters (``meta_optimizer.*`` except its
``name``: learning rate, clipping, loss weights...), the fields that set only how the
meta-parameters learn (``RESUMABLE_FIELDS``: ``agent.value_gradient``, a rule's learning-rate
multipliers such as ``plasticity.coefficient_lr_scale``), logging
(``logger.*``), evaluation (``evaluation.*``) and the run's ``name``.

``recipe.yaml`` keeps the recipe the run was started with; ``resumes.yaml`` lists each resume
(outer step, checkpoint, overrides, time). The recipe that describes the run now is the first
with every resume's overrides applied in order (``read_run_recipe``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from metods_core.errors import MetodsError
from metods_core.recipe import Recipe, recipe_to_dict
from metods_core.recipe.schema import ComponentSpec
from metods_core.run_folder import RunFolder
from metods_core.training.atomic import write_text_atomic

CHANGEABLE_ON_RESUME: tuple[str, ...] = ("trainer.", "logger.", "evaluation.", "meta_optimizer.")
"""Dotted-path prefixes of the fields a resume may change (plus ``name``)."""

FIXED_ON_RESUME: tuple[str, ...] = ("meta_optimizer.name",)
"""Fields under a changeable prefix that still may not change (the component itself)."""


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: data}


COMPONENT_SECTIONS: tuple[str, ...] = ("agent", "task", "plasticity", "readout")
"""Recipe sections whose config's ``RESUMABLE_FIELDS`` may change on resume (the agent's
``AgentConfig``, and each component's ``Config``)."""


def changeable(path: str, recipe: Recipe) -> bool:
    """Return whether the recipe field at dotted ``path`` may change on resume of ``recipe``.

    Besides the changeable prefixes, the fields that set only how the meta-parameters learn
    may change: the ``RESUMABLE_FIELDS`` of the agent's config (``value_gradient``) and of the
    task's, the rule's and the read-out's (learning-rate multipliers).
    """
    if path in FIXED_ON_RESUME:
        return False
    if path in ("name", "source") or path.startswith(CHANGEABLE_ON_RESUME):
        return True
    section, _, field = path.partition(".")
    if section not in COMPONENT_SECTIONS:
        return False
    part = getattr(recipe, section)
    config = part.config if isinstance(part, ComponentSpec) else part
    return field in getattr(type(config), "RESUMABLE_FIELDS", ())


def check_resume_changes(saved: Recipe, resumed: Recipe, checkpoint_step: int) -> None:
    """Refuse a resume that changes the run's identity or leaves nothing to train.

    Raises:
        MetodsError: listing every field that may not change, or the budget already spent.
    """
    before, after = _flatten(recipe_to_dict(saved)), _flatten(recipe_to_dict(resumed))
    missing = "(absent)"
    fixed = [
        f"{key} ({before.get(key, missing)!r} -> {after.get(key, missing)!r})"
        for key in sorted(set(before) | set(after))
        if before.get(key, missing) != after.get(key, missing) and not changeable(key, saved)
    ]
    if fixed:
        raise MetodsError(
            f"a resume cannot change {', '.join(fixed)}: they define the run (seed, task, agent "
            "shape, components). A resume may change trainer.*, meta_optimizer.* (not its "
            "name), logger.*, evaluation.*, agent.value_gradient and a rule's learning-rate "
            "multipliers (such as plasticity.coefficient_lr_scale); start a new run for the "
            "others"
        )
    if resumed.trainer.max_steps <= checkpoint_step:
        raise MetodsError(
            f"the checkpoint has already taken {checkpoint_step} outer steps, and "
            f"trainer.max_steps is {resumed.trainer.max_steps}: nothing to train. Give a larger "
            f"budget, e.g. trainer.max_steps={checkpoint_step * 2}"
        )


def read_resumes(run_dir: Path) -> list[dict[str, Any]]:
    """Return the run's resume history (empty for a run never resumed)."""
    path = RunFolder(run_dir).resumes
    if not path.is_file():
        return []
    try:
        history = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError) as error:
        raise MetodsError(f"{path} cannot be read ({error}); restore or remove it") from None
    if not isinstance(history, list) or not all(isinstance(item, dict) for item in history):
        raise MetodsError(f"{path} is not a list of resumes; restore or remove it")
    return history


def resume_overrides(run_dir: Path) -> list[str]:
    """Return every earlier resume's overrides, in order."""
    return [str(item) for entry in read_resumes(run_dir) for item in entry.get("overrides", [])]


def record_resume(run_dir: Path, overrides: Sequence[str], step: int, checkpoint: Path) -> None:
    """Append one resume to ``RUN_DIR/resumes.yaml`` (written atomically)."""
    entry = {
        "outer_step": step,
        "checkpoint": str(checkpoint),
        "overrides": list(overrides),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    history = [*read_resumes(run_dir), entry]
    write_text_atomic(RunFolder(run_dir).resumes, yaml.safe_dump(history, sort_keys=False))
