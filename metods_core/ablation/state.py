"""What a run of an ablation still needs, decided from its run directory alone.

- no directory: train it;
- a directory without a checkpoint (stopped before its first save): delete it and train again;
- a checkpoint before the plan's ``trainer.max_steps`` (read with ``read_checkpoint``): resume;
- training finished, the evaluation summary (or, with the ablation's ``impairment``, the
  impairment record) missing, unreadable or evaluated otherwise: evaluate;
- all of it there: skip.

A run directory whose recipe differs from the plan (other than in how it logs, evaluates or
threads) is a conflict: it is reported and nothing starts. Each run's status (done or failed,
its error and the last lines of its log, its wall time) is kept in its status file
(``RunFolder.status``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from metods_core.ablation.plan import PlannedRun
from metods_core.errors import MetodsError
from metods_core.recipe import recipe_to_dict
from metods_core.run_folder import LAST_CHECKPOINT, RunFolder
from metods_core.training.checkpoints import (
    CheckpointError,
    checkpoint_outer_step,
    list_checkpoints,
    read_checkpoint,
)
from metods_core.training.run_dir import read_run_recipe

_IGNORED = ("source", "trainer.num_threads", "trainer.max_steps", "logger", "evaluation")
"""Recipe fields a finished or interrupted run may differ in from the plan: none changes what
is learned (max_steps is checked against the checkpoint instead)."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """What a run needs: train, restart, resume, evaluate, skip, or nothing it can do."""

    action: str
    """train | restart | resume | evaluate | skip | broken | conflict"""
    checkpoint: Path | None = None
    """With resume: an earlier checkpoint to continue from, when last.ckpt is unreadable."""
    problem: str | None = None
    """With broken or conflict: why."""


@dataclasses.dataclass
class RunOutcome:
    """How one run of the ablation ended."""

    run: PlannedRun
    status: str
    """done or failed."""
    action: str
    """What this invocation did: trained, restarted, resumed, evaluated, skipped, or none."""
    wall_time_s: float | None = None
    """Seconds its processes took, summed over the invocations that ran them to an end."""
    error: str | None = None
    log_tail: list[str] = dataclasses.field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    impairment: dict[str, Any] | None = None
    """With the ablation's ``impairment``: the run's impairment record
    (``metods_core.impairment.evaluate_impairment``)."""


def inspect_run(run: PlannedRun) -> Decision:
    """Decide from the run directory what ``run`` still needs."""
    run_dir = run.run_dir
    if not run_dir.exists():
        return Decision("train")
    if not list_checkpoints(run_dir):
        return Decision("restart")  # stopped before its first checkpoint: nothing to keep
    folder = RunFolder(run_dir)
    if not folder.is_run():
        problem = (
            f"{run_dir} has checkpoints but no {folder.recipe.name}; move it away to train it again"
        )
        return Decision("broken", problem=problem)
    try:
        differences = recipe_differences(run)
    except MetodsError as exc:
        differences = [f"its {folder.recipe.name} cannot be read: {exc}"]
    if differences:
        return Decision("conflict", problem=_conflict(run, "; ".join(differences[:5])))
    step, checkpoint, error = _latest_readable_checkpoint(run_dir)
    if checkpoint is None:
        return Decision("broken", problem=f"{error} Move {run_dir} away to train it again.")
    if step > run.max_steps:
        return Decision(
            "conflict", problem=_conflict(run, f"trained {step} > {run.max_steps} steps")
        )
    if step < run.max_steps:
        return Decision("resume", checkpoint if checkpoint.name != LAST_CHECKPOINT else None)
    evaluated = evaluation_matches(run) and (not run.impairment or impairment_matches(run))
    return Decision("skip" if evaluated else "evaluate")


def recipe_differences(run: PlannedRun) -> list[str]:
    """Return ``key: saved ..., planned ...`` for each field where the run's recipe differs."""
    saved = _flatten(recipe_to_dict(read_run_recipe(run.run_dir)))
    planned = _flatten(run.resolved)
    missing = "(absent)"
    return [
        f"{key}: saved {saved.get(key, missing)!r}, planned {planned.get(key, missing)!r}"
        for key in sorted(set(saved) | set(planned))
        if not key.startswith(_IGNORED) and saved.get(key, missing) != planned.get(key, missing)
    ]


def evaluation_matches(run: PlannedRun) -> bool:
    """Return whether the run's evaluation summary is complete and evaluated as the plan asks."""
    try:
        data = json.loads(evaluation_file(run).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("episodes") == run.episodes
        and data.get("greedy") == run.greedy
        and not data.get("overrides")
    )


def impairment_matches(run: PlannedRun) -> bool:
    """Return whether the run's impairment record is there, evaluated as the plan asks."""
    record = _impairment_record(run)
    return (
        record is not None
        and record.get("episodes") == run.episodes
        and record.get("greedy") == run.greedy
    )


def _impairment_record(run: PlannedRun) -> dict[str, Any] | None:
    from metods_core.impairment import read_impairment

    return read_impairment(run.run_dir, run.checkpoint)


def evaluation_file(run: PlannedRun) -> Path:
    """Return the evaluation summary of the checkpoint the plan evaluates (its last, or its
    ``best.ckpt``: ``evaluation-best.json``)."""
    from metods_core.evaluation import checkpoint_tag

    folder = RunFolder(run.run_dir)
    checkpoint = folder.best_checkpoint if run.checkpoint == "best" else None
    return folder.evaluation(checkpoint_tag(folder, checkpoint))


def _status_path(run: PlannedRun) -> Path:
    return RunFolder(run.run_dir).status


def _previous_seconds(run: PlannedRun) -> float:
    try:
        return float(json.loads(_status_path(run).read_text()).get("wall_time_s") or 0.0)
    except (OSError, ValueError, AttributeError):
        return 0.0


def record_outcome(outcome: RunOutcome, add_time: bool = False) -> RunOutcome:
    """Write the run's status file (its wall time accumulates over invocations)."""
    if add_time:
        outcome.wall_time_s = _previous_seconds(outcome.run) + (outcome.wall_time_s or 0.0)
    status = {
        "status": outcome.status,
        "action": outcome.action,
        "wall_time_s": outcome.wall_time_s,
        "error": outcome.error,
        "log_tail": outcome.log_tail,
    }
    path = _status_path(outcome.run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(status, indent=2) + "\n")
    return outcome


def finished_outcome(run: PlannedRun, action: str, seconds: float | None) -> RunOutcome:
    """Return the outcome of a run whose processes ended well (``seconds``: their time; None for
    a run skipped as already done), with its evaluation summary and impairment record; a run
    whose files are missing failed."""
    folder = RunFolder(run.run_dir)
    path = evaluation_file(run)
    try:
        evaluation = json.loads(path.read_text())
    except (OSError, ValueError):
        outcome = RunOutcome(run, "failed", action, seconds, f"{path.name} is missing")
        return record_outcome(outcome, add_time=True)
    impairment = _impairment_record(run) if run.impairment else None
    if run.impairment and impairment is None:
        from metods_core.impairment import impairment_tag

        record = folder.impairment(impairment_tag(run.checkpoint))
        missing = f"{record.name} is missing or unreadable"
        return record_outcome(RunOutcome(run, "failed", action, seconds, missing), add_time=True)
    if seconds is None:  # skipped: keep the time recorded when it ran
        previous = _previous_seconds(run) or None
        return RunOutcome(run, "done", action, previous, None, [], evaluation, impairment)
    outcome = RunOutcome(run, "done", action, seconds, None, [], evaluation, impairment)
    return record_outcome(outcome, add_time=True)


def _latest_readable_checkpoint(run_dir: Path) -> tuple[int, Path | None, str]:
    error = ""
    for path in list_checkpoints(run_dir):
        try:
            return checkpoint_outer_step(read_checkpoint(path)), path, ""
        except CheckpointError as exc:
            error = error or str(exc)
    return 0, None, error


def _conflict(run: PlannedRun, why: str) -> str:
    return (
        f"{run.run_dir} holds a run that does not match this ablation's plan ({why}); use "
        "another --out, or move that run directory away"
    )


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat
