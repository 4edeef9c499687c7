"""The robot-impairment table: each run evaluated intact and with each actuator disabled in turn.

The MetODS paper's test (Chalvidal et al. 2022, Fig. 6): a policy meta-trained on the intact
robot is meta-tested with one actuator giving no torque (``task.impair_actuator=K``), which it
never saw in training. For each run and each condition (intact, K = 0 .. A-1) the table gives
the mean held-out return and its 95 % CI; then

- ``normalised``: the paper's score, each condition's return divided by the best return of any
  compared run in that condition, averaged over the A impaired conditions (1.0: the best policy
  under every impairment). A condition whose best return is not positive beyond its 95 % CI
  (best - CI <= 0: no run is distinguishable from standing still or going backwards) has no
  such ratio, since a best return near zero would make the ratios of the others arbitrarily
  large: it is left out of the average, and ``normalised_conditions`` counts the conditions
  kept (the Markdown table then says "over k of A").
- ``impaired / intact``: the run's mean impaired return divided by its own intact return.
- ``impaired / intact by segment``: the same ratio within each of a few equal segments of the
  lifetime (the mean reward per step of the impaired conditions over the intact one's), from
  the evaluations' reward curves. The paper's claim is adaptation *within* the lifetime: a
  policy that compensates for the disabled actuator as the lifetime goes on has this ratio rise
  from the first segment to the last; one that does not keeps it flat or lets it fall.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metods_core.components import create_task_sampler
from metods_core.errors import MetodsError
from metods_core.evaluation import evaluate_run
from metods_core.recipe import Recipe
from metods_core.run_folder import RunFolder
from metods_core.training.atomic import write_text_atomic
from metods_core.training.run_dir import read_run_recipe

IMPAIR_FIELD = "impair_actuator"
"""The task Config field that disables one actuator (the MuJoCo task families have it)."""
IMPAIRABLE_TASKS = "cheetah_dir, cheetah_vel, ant_dir"
"""The shipped task families that have it, as error messages name them."""


def can_impair(recipe: Recipe) -> bool:
    """Return whether the recipe's task has actuators to disable (``task.impair_actuator``)."""
    return IMPAIR_FIELD in type(recipe.task.config).model_fields


def actuator_count(run_dir: Path) -> tuple[str, int]:
    """Return the run's task name and its number of actuators.

    Raises:
        MetodsError: the run's task has no ``impair_actuator`` field (not a MuJoCo run).
    """
    recipe = read_run_recipe(run_dir)
    if not can_impair(recipe):
        raise MetodsError(
            f"{run_dir} is a run of task '{recipe.task.name}', which has no actuators to "
            f"disable (no task.{IMPAIR_FIELD} field); the impairment table needs a MuJoCo run "
            f"({IMPAIRABLE_TASKS})"
        )
    shape = create_task_sampler(recipe).action_space.shape
    assert shape is not None and len(shape) == 1
    return recipe.task.name, int(shape[0])


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference > 0 else None


def _best(values: Sequence[float], cis: Sequence[float]) -> float:
    """Return the best of ``values`` if it is positive beyond its 95 % CI ``cis``, else 0 (so
    that ``_ratio`` against it is None)."""
    index = max(range(len(values)), key=lambda i: values[i])
    return values[index] if values[index] - cis[index] > 0 else 0.0


def segment_bounds(steps: int, segments: int) -> list[tuple[int, int]]:
    """Split ``steps`` into ``segments`` consecutive ranges ``[start, end)`` whose lengths
    differ by at most one (the longer ones first).

    Raises:
        MetodsError: fewer steps than segments, or fewer than one segment.
    """
    if not 1 <= segments <= steps:
        raise MetodsError(
            f"impairment: --segments must be between 1 and the lifetime's {steps} steps, "
            f"got {segments}"
        )
    size, extra = divmod(steps, segments)
    bounds, start = [], 0
    for index in range(segments):
        end = start + size + (1 if index < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def _segment_means(curve: Sequence[float], bounds: list[tuple[int, int]]) -> list[float]:
    """Mean reward per step of ``curve`` ``(lifetime_steps,)`` over each ``[start, end)``."""
    return [sum(curve[start:end]) / (end - start) for start, end in bounds]


def impairment_tag(checkpoint: str | None = None, freeze_memory: int | None = None) -> str:
    """Return the tag of a run's impairment record (:meth:`RunFolder.impairment`): ``""`` for
    the last checkpoint, ``-best`` for ``best.ckpt``, then ``-freeze_memory=K`` for a lesion."""
    tag = "" if checkpoint in (None, "last") else f"-{checkpoint}"
    return tag if freeze_memory is None else f"{tag}-freeze_memory={freeze_memory}"


def evaluate_impairment(
    run: Path,
    episodes: int | None = None,
    checkpoint: str | None = None,
    greedy: bool | None = None,
    freeze_memory: int | None = None,
) -> dict[str, Any]:
    """Evaluate one run intact and with each actuator disabled; write and return its record.

    Each evaluation is ``metods evaluate`` (its JSON is written in the run folder, tagged with
    the override). The record, written atomically to the run folder's impairment file
    (:meth:`RunFolder.impairment`, tagged by :func:`impairment_tag`), is what
    :func:`score_impairment` needs: ``{"run", "task", "actuators", "checkpoint", "episodes",
    "greedy", "freeze_memory", "intact", "intact_ci95", "intact_reward_curve": [T],
    "impaired": [A], "impaired_ci95": [A], "impaired_reward_curves": [A][T]}``.

    Raises:
        MetodsError: the run is not a MuJoCo run, or an evaluation failed (see
            :func:`evaluate_run`).
    """
    task, actuators = actuator_count(run)

    def evaluate(overrides: list[str]) -> dict[str, Any]:
        return evaluate_run(
            run, episodes, overrides, greedy, checkpoint, freeze_memory=freeze_memory
        )

    intact = evaluate([])
    impaired = [evaluate([f"task.{IMPAIR_FIELD}={k}"]) for k in range(actuators)]
    record = {
        "run": str(run),
        "task": task,
        "actuators": actuators,
        "checkpoint": checkpoint or "last",
        "episodes": intact["episodes"],
        "greedy": intact["greedy"],
        "freeze_memory": freeze_memory,
        "intact": intact["mean_reward"],
        "intact_ci95": intact["mean_reward_ci95"],
        "intact_reward_curve": intact["reward_curve"],
        "impaired": [r["mean_reward"] for r in impaired],
        "impaired_ci95": [r["mean_reward_ci95"] for r in impaired],
        "impaired_reward_curves": [r["reward_curve"] for r in impaired],
    }
    path = RunFolder(Path(run)).impairment(impairment_tag(checkpoint, freeze_memory))
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return record


def read_impairment(
    run: Path, checkpoint: str | None = None, freeze_memory: int | None = None
) -> dict[str, Any] | None:
    """Return the run's impairment record written by :func:`evaluate_impairment`, or None if
    there is none or it cannot be read."""
    path = RunFolder(Path(run)).impairment(impairment_tag(checkpoint, freeze_memory))
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def impairment_table(
    runs: Sequence[Path],
    episodes: int | None = None,
    checkpoint: str | None = None,
    greedy: bool | None = None,
    segments: int = 4,
    freeze_memory: int | None = None,
) -> dict[str, Any]:
    """Evaluate every run intact and with each actuator disabled (:func:`evaluate_impairment`);
    return the table of :func:`score_impairment` over them.

    ``freeze_memory`` K holds every agent's memory from step K of the lifetime on, in every
    condition (a lesion, see :func:`evaluate_run`).

    Raises:
        MetodsError: no runs, a run that is not a MuJoCo run, or runs of different robots
            (checked before any evaluation); more segments than the lifetime has steps, or
            lifetimes of different lengths (checked after each run's evaluations).
    """
    if not runs:
        raise MetodsError("impairment: give at least one run folder")
    found = {Path(run): actuator_count(Path(run)) for run in runs}
    if len({count for _, count in found.values()}) > 1:
        described = ", ".join(f"{run} ({task}, {n})" for run, (task, n) in found.items())
        raise MetodsError(f"impairment: the runs have different numbers of actuators: {described}")
    records: list[dict[str, Any]] = []
    table: dict[str, Any] = {}
    for run in found:  # scored after each run: a mismatch or bad segments stop the next one
        records.append(evaluate_impairment(run, episodes, checkpoint, greedy, freeze_memory))
        table = score_impairment(records, segments)
    return table


def impaired_over_intact(record: dict[str, Any]) -> tuple[float, float | None]:
    """Return a run's mean impaired return and its ratio to the run's own intact return (None
    where the intact return is not positive), from its record or table row."""
    mean_impaired = sum(record["impaired"]) / len(record["impaired"])
    return mean_impaired, _ratio(mean_impaired, record["intact"])


def score_impairment(records: Sequence[dict[str, Any]], segments: int = 4) -> dict[str, Any]:
    """Score runs' impairment records against each other; return the table's data.

    Returns ``{"actuators": A, "task": name, "checkpoint", "freeze_memory": K or None,
    "segments": [[start, end]] (S step ranges of the lifetime, 0-based, end excluded), "runs":
    [{"run", "intact", "intact_ci95", "impaired": [A], "impaired_ci95": [A], "mean_impaired",
    "impaired_over_intact", "impaired_over_intact_by_segment": [S], "normalised",
    "normalised_conditions", "normalised_by_condition": [A], "normalised_intact"}]}``: the
    normalised scores are relative to the runs given (see the module docstring).

    Raises:
        MetodsError: no records, records of different robots, lifetimes of different lengths,
            or more segments than the lifetime has steps.
    """
    if not records:
        raise MetodsError("impairment: no runs to score")
    first = records[0]
    actuators = first["actuators"]
    bounds = segment_bounds(len(first["intact_reward_curve"]), segments)
    rows: list[dict[str, Any]] = []
    for record in records:
        if record["actuators"] != actuators:
            raise MetodsError(
                f"impairment: {record['run']} ({record['task']}, {record['actuators']} "
                f"actuators) and {first['run']} ({first['task']}, {actuators}) have different "
                "numbers of actuators"
            )
        if len(record["intact_reward_curve"]) != len(first["intact_reward_curve"]):
            raise MetodsError(
                f"impairment: {record['run']} and {first['run']} have lifetimes of different "
                "lengths; compare runs of one task setting"
            )
        intact_by_segment = _segment_means(record["intact_reward_curve"], bounds)
        impaired_by_segment = [_segment_means(c, bounds) for c in record["impaired_reward_curves"]]
        by_segment = [
            _ratio(sum(means[s] for means in impaired_by_segment) / actuators, intact_mean)
            for s, intact_mean in enumerate(intact_by_segment)
        ]
        rows.append(
            {
                "run": record["run"],
                "intact": record["intact"],
                "intact_ci95": record["intact_ci95"],
                "impaired": list(record["impaired"]),
                "impaired_ci95": list(record["impaired_ci95"]),
                "impaired_over_intact_by_segment": by_segment,
            }
        )
    best = [
        _best([row["impaired"][k] for row in rows], [row["impaired_ci95"][k] for row in rows])
        for k in range(actuators)
    ]
    best_intact = max(row["intact"] for row in rows)
    for row in rows:
        row["mean_impaired"], row["impaired_over_intact"] = impaired_over_intact(row)
        row["normalised_intact"] = _ratio(row["intact"], best_intact)
        scores = [_ratio(row["impaired"][k], best[k]) for k in range(actuators)]
        row["normalised_by_condition"] = scores
        defined = [score for score in scores if score is not None]
        row["normalised"] = sum(defined) / len(defined) if defined else None
        row["normalised_conditions"] = len(defined)
    return {
        "task": first["task"],
        "actuators": actuators,
        "checkpoint": first["checkpoint"],
        "freeze_memory": first["freeze_memory"],
        "segments": [list(pair) for pair in bounds],
        "runs": rows,
    }


def _cell(value: float | None, ci: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f} ± {ci:.1f}" if ci is not None else f"{value:.2f}"


def format_markdown(table: dict[str, Any]) -> str:
    """Return the table as Markdown: returns per condition, then the two scores."""
    actuators = table["actuators"]
    head = ["run", "intact", *[f"K = {k}" for k in range(actuators)]]
    head += ["mean impaired", "impaired / intact", "normalised (paper)"]
    frozen = table["freeze_memory"]
    lesion = "" if frozen is None else f", memory frozen from step {frozen}"
    lines = [
        f"Impairment table: {table['task']}, checkpoint {table['checkpoint']}{lesion} (mean "
        "held-out return ± 95 % CI; K: the disabled actuator; normalised: each impaired return "
        "divided by the best run's in that condition, averaged over the K whose best return is "
        "positive beyond its CI)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in table["runs"]:
        cells = [row["run"], _cell(row["intact"], row["intact_ci95"])]
        cells += [_cell(v, c) for v, c in zip(row["impaired"], row["impaired_ci95"], strict=True)]
        cells += [f"{row['mean_impaired']:.1f}", _cell(row["impaired_over_intact"])]
        normalised = _cell(row["normalised"])
        if row["normalised"] is not None and row["normalised_conditions"] < actuators:
            normalised += f" (over {row['normalised_conditions']} of {actuators})"
        cells += [normalised]
        lines.append("| " + " | ".join(cells) + " |")
    spans = [
        f"step {end}" if end - start == 1 else f"steps {start + 1}–{end}"
        for start, end in table["segments"]
    ]
    lines += [
        "",
        "Within the lifetime: mean impaired reward per step / intact reward per step, by "
        "segment of the lifetime (rising: the policy adapts to the disabled actuator as the "
        "lifetime goes on)",
        "",
        "| " + " | ".join(["run", *spans]) + " |",
        "|" + "---|" * (len(spans) + 1),
    ]
    for row in table["runs"]:
        ratios = [_cell(value) for value in row["impaired_over_intact_by_segment"]]
        lines.append("| " + " | ".join([row["run"], *ratios]) + " |")
    return "\n".join(lines) + "\n"
