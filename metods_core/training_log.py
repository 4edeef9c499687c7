"""A run's training log: the logged columns by outer step, and their means over windows.

Every (re)start of a run writes ``logs/version_K/metrics.csv`` (Lightning's CSV logger, one row
per logged outer step, ``step`` counted from 0). :func:`read_training_log` merges them, later
versions winning for repeated steps; :func:`window_table` summarises columns of one or several
runs over consecutive windows of outer steps, the table ``metods curve`` prints.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from metods_core.errors import MetodsError
from metods_core.run_folder import RunFolder

Stat = Literal["mean", "min", "max"]
"""How a window's values are summarised."""

TRAIN_PREFIX = "train/"
"""The prefix of the training metrics' columns; ``metods curve`` accepts names without it."""

TEST_PREFIX = "test/"
"""The prefix of the columns of the periodic meta-test of the held-out tasks."""

VALIDATION_PREFIX = "validation/"
"""The prefix of the columns of the periodic meta-test of a task's validation split."""


def read_training_logs(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Return every logged column's ``(step, value)`` pairs, by step, in one pass over the CSVs.

    ``step`` counts outer steps from 0. A resumed run writes a new ``logs/version_K``; later
    versions win for repeated steps. Empty cells (a column not logged at that step) are skipped;
    ``epoch`` and ``step`` are not columns here.
    """
    points: dict[str, dict[int, float]] = {}
    for path in RunFolder(run_dir).metrics_csvs():
        with path.open() as handle:
            for row in csv.DictReader(handle):
                step = int(row["step"])
                for column, value in row.items():
                    if column not in ("epoch", "step") and value not in (None, ""):
                        points.setdefault(column, {})[step] = float(value)
    return {column: sorted(by_step.items()) for column, by_step in points.items()}


def read_training_log(
    run_dir: Path, column: str = "train/episode_reward"
) -> list[tuple[int, float]]:
    """Return ``(step, value)`` pairs of ``column`` (see :func:`read_training_logs`)."""
    return read_training_logs(run_dir).get(column, [])


def log_columns(run_dir: Path) -> list[str]:
    """Return the columns the run's CSV logs hold a value of, sorted."""
    return sorted(read_training_logs(run_dir))


def resolve_column(runs: Sequence[Path], name: str, available: Sequence[str]) -> str:
    """Return the logged column ``name`` refers to: itself, or ``train/<name>``.

    Raises:
        MetodsError: neither is in ``available`` (the columns ``runs`` log); the message lists
            them.
    """
    for candidate in (name, f"{TRAIN_PREFIX}{name}"):
        if candidate in available:
            return candidate
    shown = ", ".join(c.removeprefix(TRAIN_PREFIX) for c in available) or "none"
    if len(runs) == 1:
        what = f"{runs[0]} logs no column {name!r}"
    else:
        what = f"none of {', '.join(str(r) for r in runs)} logs a column {name!r}"
    raise MetodsError(f"{what}; the logged columns (the train/ prefix may be left out): {shown}")


def window_table(
    runs: Sequence[Path], columns: Sequence[str], window: int, stat: Stat = "mean"
) -> dict[str, Any]:
    """Summarise ``columns`` of each run over consecutive windows of ``window`` outer steps.

    Window ``k`` holds the logged steps ``k * window`` to ``(k + 1) * window - 1`` and is named
    by the outer steps it spans, counted from 1 (``"1-20"``, ``"21-40"``, ...); the last window
    ends at the last step any run logged. A value is ``stat`` over the window's logged values
    that are not NaN, or ``None`` where there are none (``n`` counts them); a run that does not
    log a column another run logs has no value in it. Headers are the
    columns' names, after the run folder's name when there are several runs (its whole path
    where two names are the same).

    Returns:
        ``{"window": int, "stat": str, "headers": [run/column labels], "rows": [{"steps":
        "1-20", "values": [float or None per header], "n": [int per header]}]}``.

    Raises:
        MetodsError: ``window`` below 1, a folder with no training log, or a column no run
            logs.
    """
    if window < 1:
        raise MetodsError(f"curve: --window must be at least 1, got {window}")
    logs_of = {}
    for run_dir in runs:
        logs_of[run_dir] = read_training_logs(run_dir)
        if not logs_of[run_dir]:
            raise MetodsError(
                f"{run_dir} has no training log (logs/version_*/metrics.csv): is it a run "
                "folder, and has it finished an outer step?"
            )
    # A column is resolved against every run's: one run may not log it (yet), but a name that
    # no run logs is refused.
    union = sorted({column for logs in logs_of.values() for column in logs})
    resolved = [resolve_column(runs, name, union) for name in columns]
    series: list[tuple[str, list[tuple[int, float]]]] = []
    names = [run_dir.name for run_dir in runs]
    for run_dir in runs:
        run_label = run_dir.name if names.count(run_dir.name) == 1 else str(run_dir)
        for column in resolved:
            label = column.removeprefix(TRAIN_PREFIX)
            label = f"{run_label} {label}" if len(runs) > 1 else label
            series.append((label, logs_of[run_dir].get(column, [])))
    last = max((points[-1][0] for _, points in series if points), default=-1)
    rows = []
    for start in range(0, last + 1, window):
        end = min(start + window, last + 1)
        values, counts = [], []
        for _, points in series:
            inside = [v for step, v in points if start <= step < end and not math.isnan(v)]
            values.append(_summarise(inside, stat))
            counts.append(len(inside))
        steps = f"{start + 1}-{end}" if end > start + 1 else str(end)
        rows.append({"steps": steps, "values": values, "n": counts})
    return {"window": window, "stat": stat, "headers": [label for label, _ in series], "rows": rows}


def _summarise(values: list[float], stat: Stat) -> float | None:
    if not values:
        return None
    if stat == "min":
        return min(values)
    if stat == "max":
        return max(values)
    return sum(values) / len(values)


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"


def format_window_markdown(table: dict[str, Any]) -> str:
    """Render :func:`window_table`'s result as a Markdown table (no value: an empty cell)."""
    title = f"outer steps ({table['stat']} over windows of {table['window']})"
    lines = [
        "| " + " | ".join([title, *table["headers"]]) + " |",
        "|---|" + "---:|" * len(table["headers"]),
    ]
    for row in table["rows"]:
        cells = [_cell(value) for value in row["values"]]
        lines.append("| " + " | ".join([row["steps"].replace("-", "–"), *cells]) + " |")
    return "\n".join(lines) + "\n"
