"""An ablation's outcome: results.csv (one row per run), summary.md (per cell), ablation.png;
with ``impairment``, impairment.md and impairment.json (the runs scored against each other)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metods_core.run_folder import RunFolder, metric_key
from metods_core.statistics import mean_and_ci95

if TYPE_CHECKING:
    from metods_core.ablation.spec import Ablation
    from metods_core.ablation.state import RunOutcome

RUN_COLUMNS = ("run", "cell", "seed", "status", "action", "wall_time_s", "error")
"""Columns of results.csv besides the grid keys (after ``cell``) and the metrics (at the end)."""
_NOT_METRICS = ("episodes", "freeze_memory")
"""Scalar entries of the evaluation summary that describe the evaluation, not the agent."""
IMPAIRMENT_COLUMNS = {
    "impaired_mean_reward": "the mean held-out return over the conditions with one actuator "
    "disabled",
    "impaired_over_intact": "that mean over the run's own intact return",
    "normalised_impaired_seed": "the MetODS paper's score: each impaired return divided by the "
    "best of the runs of the same seed (one per grid cell) in that condition, averaged over the "
    "actuators",
    "normalised_impaired_all": "the same score against the best of all the ablation's runs",
}
"""The impairment's columns of results.csv and summary.md, and what each is."""


def main_metric_key(evaluation: dict[str, Any]) -> str:
    """Return the evaluation summary's key of the task family's main metric."""
    return metric_key(str(evaluation.get("main_metric") or "episode_reward"))


def scalar_metrics(evaluation: dict[str, Any]) -> dict[str, float | int]:
    """Return every scalar metric of an evaluation (``None``, an undefined metric, as NaN)."""
    return {
        key: math.nan if value is None else value
        for key, value in evaluation.items()
        if key not in _NOT_METRICS
        and (value is None or (isinstance(value, int | float) and not isinstance(value, bool)))
    }


def results_rows(
    grid_keys: Sequence[str],
    outcomes: Sequence[RunOutcome],
    impairment: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Return one results.csv row per run: its grid values, seed, status, time and metrics
    (with impairment records, the ``IMPAIRMENT_COLUMNS`` last, from ``impairment``, the
    outcomes' ``impairment_scores``, computed here if not given)."""
    if impairment is None:
        impairment = impairment_scores(outcomes)
    rows = []
    for outcome in outcomes:
        run = outcome.run
        row: dict[str, Any] = {"run": run.name, "cell": run.cell}
        row.update({key: run.values[key] for key in grid_keys})
        row.update(
            seed=run.seed,
            status=outcome.status,
            action=outcome.action,
            wall_time_s=None if outcome.wall_time_s is None else round(outcome.wall_time_s, 1),
            error=outcome.error or "",
        )
        row.update(scalar_metrics(outcome.evaluation or {}))
        if impairment:
            row.update(impairment["columns"].get(run.name, dict.fromkeys(IMPAIRMENT_COLUMNS)))
        rows.append(row)
    return rows


def impairment_scores(outcomes: Sequence[RunOutcome]) -> dict[str, Any]:
    """Score the finished runs' impairment records: those of each seed against each other, and
    all of them together (``score_impairment``).

    Returns ``{}`` without records, else ``{"columns": {run name: {IMPAIRMENT_COLUMNS}},
    "seeds": {seed: table}, "all": table or None, "problem": str or None}``: a problem (runs of
    different robots or lifetime lengths cannot be scored together) leaves the normalised
    columns empty and is said in impairment.md.
    """
    from metods_core.errors import MetodsError
    from metods_core.impairment import impaired_over_intact, score_impairment

    done = [o for o in outcomes if o.status == "done" and o.impairment is not None]
    if not done:
        return {}
    records = {o.run.name: {**o.impairment, "run": o.run.name} for o in done}  # type: ignore[dict-item]
    seeds: dict[int, list[str]] = {}
    for outcome in done:
        seeds.setdefault(outcome.run.seed, []).append(outcome.run.name)
    columns: dict[str, dict[str, Any]] = {}
    for name, record in records.items():
        mean_impaired, ratio = impaired_over_intact(record)
        columns[name] = dict.fromkeys(IMPAIRMENT_COLUMNS)
        columns[name].update(impaired_mean_reward=mean_impaired, impaired_over_intact=ratio)
    try:
        every = score_impairment(list(records.values()))
        by_seed = {
            seed: score_impairment([records[name] for name in names])
            for seed, names in sorted(seeds.items())
        }
    except MetodsError as exc:
        return {"columns": columns, "seeds": {}, "all": None, "problem": str(exc)}
    for row in every["runs"]:
        columns[row["run"]]["normalised_impaired_all"] = row["normalised"]
    for table in by_seed.values():
        for row in table["runs"]:
            columns[row["run"]]["normalised_impaired_seed"] = row["normalised"]
    return {"columns": columns, "seeds": by_seed, "all": every, "problem": None}


def write_impairment(
    out: Path, outcomes: Sequence[RunOutcome], scores: dict[str, Any] | None = None
) -> list[Path]:
    """Write ``impairment.md`` (a table per seed, then all runs) and ``impairment.json`` into
    ``out`` when the runs have impairment records (``scores``: the outcomes'
    ``impairment_scores``, computed here if not given); return the paths written."""
    from metods_core.impairment import format_markdown
    from metods_core.training.atomic import write_text_atomic

    if scores is None:
        scores = impairment_scores(outcomes)
    if not scores:
        return []
    lines = [
        "# Impairment",
        "",
        "Each run evaluated intact and with each actuator disabled in turn (`metods "
        "impairment`). First the runs of each seed scored against each other (the paper's "
        "comparison: one policy per agent), then all runs together.",
        "",
    ]
    if scores["problem"]:
        lines += [f"The runs cannot be scored together: {scores['problem']}", ""]
    for seed, table in scores["seeds"].items():
        lines += [f"## Seed {seed}", "", format_markdown(table)]
    if scores["all"] is not None:
        lines += ["## All runs", "", format_markdown(scores["all"])]
    markdown, data = out / "impairment.md", out / "impairment.json"
    write_text_atomic(markdown, "\n".join(lines).rstrip() + "\n")
    payload = {key: scores[key] for key in ("seeds", "all", "problem")}
    write_text_atomic(data, json.dumps(payload, indent=2) + "\n")
    return [markdown, data]


def metric_columns(rows: Sequence[dict[str, Any]], grid_keys: Sequence[str]) -> list[str]:
    """Return the metric columns of ``rows`` in first-seen order."""
    fixed = {*RUN_COLUMNS, *grid_keys}
    return list(dict.fromkeys(key for row in rows for key in row if key not in fixed))


def summarise(rows: Sequence[dict[str, Any]], grid_keys: Sequence[str]) -> list[dict[str, Any]]:
    """Return one entry per grid cell: its values, finished and failed seeds, and per metric
    (``<name>`` columns, not ``_ci95``/``_n``) the mean, 95 % CI half-width and count over the
    finished seeds (``mean_and_ci95``). Works on rows read back from results.csv as well.
    """
    cells: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault(str(row["cell"]), []).append(row)
    columns = metric_columns(rows, grid_keys)
    metrics = [name for name in columns if not name.endswith(("_ci95", "_n"))]
    summary = []
    for cell, members in cells.items():
        done = [row for row in members if row["status"] == "done"]
        summary.append(
            {
                "cell": cell,
                "values": {key: members[0].get(key) for key in grid_keys},
                "n": len(done),
                "failed": len(members) - len(done),
                "metrics": {m: mean_and_ci95([_number(r.get(m)) for r in done]) for m in metrics},
            }
        )
    return summary


def paired_differences(
    rows: Sequence[dict[str, Any]], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """Return, for each grid cell after the first (the baseline), each metric's difference
    from the baseline seed by seed: the mean, 95 % CI half-width and count over the seeds that
    finished in both (``mean_and_ci95`` of the per-seed differences).

    The cells of one seed share its seed, hence its held-out tasks, so the paired interval is
    narrower than the two cells' own intervals where seeds vary together. Returns ``[{"cell",
    "baseline", "metrics": {metric: (mean, half_width, n)}}]``, empty with fewer than 2 cells.
    """
    by_cell: dict[str, dict[Any, dict[str, Any]]] = {}
    for row in rows:  # every cell, in plan order; only its finished seeds
        finished = by_cell.setdefault(str(row["cell"]), {})
        if row["status"] == "done":
            finished[str(row["seed"])] = row
    cells = list(by_cell)
    if len(cells) < 2:
        return []
    baseline = by_cell[cells[0]]
    differences = []
    for cell in cells[1:]:
        seeds = [seed for seed in by_cell[cell] if seed in baseline]
        stats = {}
        for metric in metrics:
            values = [
                _number(by_cell[cell][seed].get(metric)) - _number(baseline[seed].get(metric))
                for seed in seeds
            ]
            stats[metric] = mean_and_ci95(values)
        differences.append({"cell": cell, "baseline": cells[0], "metrics": stats})
    return differences


def write_tables(
    out: Path,
    ablation: Ablation,
    outcomes: Sequence[RunOutcome],
    command: str,
    wall_time_s: float,
) -> list[Path]:
    """Write ``results.csv`` and ``summary.md`` into ``out``; return their paths."""
    grid_keys = list(ablation.grid)
    impairment = impairment_scores(outcomes)  # scored once for both files
    rows = results_rows(grid_keys, outcomes, impairment)
    columns = ["run", "cell", *grid_keys, *RUN_COLUMNS[2:], *metric_columns(rows, grid_keys)]
    results = out / "results.csv"
    with results.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    main = next((main_metric_key(o.evaluation) for o in outcomes if o.evaluation), "mean_reward")
    summary = out / "summary.md"
    summary.write_text(
        format_summary(ablation.name, grid_keys, rows, outcomes, main, command, wall_time_s)
    )
    return [results, summary, *write_impairment(out, outcomes, impairment)]


BEST_CHECKPOINT_NOTE = (
    "Each run is evaluated at its `best.ckpt` (`checkpoint: best`): `outer_step` is that "
    "checkpoint's step."
)


def format_summary(
    name: str,
    grid_keys: Sequence[str],
    rows: Sequence[dict[str, Any]],
    outcomes: Sequence[RunOutcome],
    main: str,
    command: str,
    wall_time_s: float,
) -> str:
    """Return summary.md: the per-cell table, the failed runs with their logs, how it was run."""
    cells = summarise(rows, grid_keys)
    metrics = list(cells[0]["metrics"]) if cells else []
    metrics = sorted(metrics, key=lambda m: m != main)  # the main metric first, stable
    failed = [o for o in outcomes if o.status != "done"]
    run_seconds = sum(o.wall_time_s or 0.0 for o in outcomes)
    lines = [f"# Ablation `{name}`", ""]
    lines += [f"Command: `{command}`", ""] if command else []
    lines += [
        f"{len(outcomes)} runs: {len(outcomes) - len(failed)} done, {len(failed)} failed. "
        f"Wall time of this invocation: {wall_time_s:.0f} s; of every run's processes, "
        f"summed: {run_seconds:.0f} s.",
        "",
        "Each metric: mean ± half-width of the 95 % confidence interval over the finished seeds "
        "(Student's t; n/a with one seed). Main metric: " + f"`{main}`.",
        "",
    ]
    if any(o.run.checkpoint == "best" for o in outcomes):
        lines += [BEST_CHECKPOINT_NOTE, ""]
    if any(column in metrics for column in IMPAIRMENT_COLUMNS):
        lines += ["Impairment (the tables per seed: impairment.md):", ""]
        lines += [f"- `{name}`: {what}" for name, what in IMPAIRMENT_COLUMNS.items()]
        lines += [""]
    header = [*grid_keys, "n", "failed", *metrics]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in cells:
        values = [_cell_text(cell["values"][key]) for key in grid_keys]
        stats = [_format_stat(*cell["metrics"][m]) for m in metrics]
        lines.append(
            "| " + " | ".join([*values, str(cell["n"]), str(cell["failed"]), *stats]) + " |"
        )
    differences = paired_differences(rows, metrics)
    if differences:
        lines += [
            "",
            f"## Paired differences from `{differences[0]['baseline']}`",
            "",
            "Each metric of a cell minus the first cell's, seed by seed (the runs of one seed "
            "meet the same held-out tasks): mean ± 95 % CI half-width over the seeds both "
            "finished (Student's t). An interval that excludes 0 is a difference these seeds "
            "resolve.",
            "",
            "| " + " | ".join([*grid_keys, "n", *metrics]) + " |",
            "|" + "---|" * (len(grid_keys) + 1 + len(metrics)),
        ]
        values_of = {cell["cell"]: cell["values"] for cell in cells}
        for difference in differences:
            values = [_cell_text(values_of[difference["cell"]][key]) for key in grid_keys]
            stats = [_format_stat(*difference["metrics"][m]) for m in metrics]
            count = max((stat[2] for stat in difference["metrics"].values()), default=0)
            lines.append("| " + " | ".join([*values, str(count), *stats]) + " |")
    if failed:
        lines += ["", "## Failed runs", ""]
        for outcome in failed:
            lines += [f"### `{outcome.run.name}`", "", outcome.error or "failed", ""]
            log = RunFolder(outcome.run.run_dir).log
            if outcome.log_tail:
                lines += [f"Last lines of `{log}`:", "", "```", *outcome.log_tail, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_plot(out: Path, outcomes: Sequence[RunOutcome]) -> Path:
    """Draw ``ablation.png``: the main metric per cell with CIs, and mean training curves."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    from metods_core.training_log import read_training_log

    grid_keys = list(outcomes[0].run.values) if outcomes else []
    cells = summarise(results_rows(grid_keys, outcomes), grid_keys)
    main = next((main_metric_key(o.evaluation) for o in outcomes if o.evaluation), "mean_reward")
    width = max(10.0, 6.0 + 0.6 * len(cells))
    figure, (metric_axis, curve_axis) = plt.subplots(1, 2, figsize=(width, 4.8))
    stats = [cell["metrics"].get(main, (math.nan, math.nan, 0)) for cell in cells]
    positions = list(range(len(cells)))
    metric_axis.errorbar(
        positions,
        [s[0] for s in stats],
        yerr=[0.0 if math.isnan(s[1]) else s[1] for s in stats],
        fmt="o",
        capsize=4,
    )
    metric_axis.set_xticks(positions, [c["cell"] for c in cells], rotation=30, ha="right")
    metric_axis.set_xlim(-0.5, len(cells) - 0.5)
    metric_axis.set_ylabel(f"{main} (held-out tasks)")
    metric_axis.set_title("mean ± 95 % CI over seeds")
    metric_axis.grid(alpha=0.3)
    drawn = 0
    for cell in cells:
        runs = [
            o.run.run_dir for o in outcomes if o.run.cell == cell["cell"] and o.status == "done"
        ]
        steps, means = mean_curve([read_training_log(run_dir) for run_dir in runs])
        if steps:
            curve_axis.plot(steps, means, linewidth=1, label=cell["cell"])
            drawn += 1
    if drawn:
        curve_axis.legend(fontsize="x-small")
    else:
        curve_axis.text(0.5, 0.5, "no training logs", ha="center", transform=curve_axis.transAxes)
    curve_axis.set_xlabel("outer step")
    curve_axis.set_ylabel("train/episode_reward")
    curve_axis.set_title("training curves, mean over seeds")
    curve_axis.grid(alpha=0.3)
    path = out / "ablation.png"
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> tuple[list[int], list[float]]:
    """Average ``(step, value)`` curves step by step, over the curves that have that step."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def _number(value: Any) -> float:
    try:
        return math.nan if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return math.nan


def _format_stat(mean: float, half_width: float, count: int) -> str:
    if count == 0 or math.isnan(mean):
        return "n/a"
    spread = "n/a" if math.isnan(half_width) else _significant(half_width, 2)
    return f"{_significant(mean, 4)} ± {spread}"


def _significant(value: float, digits: int) -> str:
    """Return ``value`` to ``digits`` significant digits, without an exponent below 1e15
    (``230``, not ``2.3e+02``)."""
    text = f"{value:.{digits}g}"
    if "e" not in text or abs(value) >= 1e15:
        return text
    plain = f"{float(text):.15f}".rstrip("0").rstrip(".")
    return plain if plain not in ("", "-") else "0"


def _cell_text(value: Any) -> str:
    return str(value).replace("|", "\\|")
