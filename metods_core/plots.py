"""PNG plots of a run: the training curve and the evaluation's per-index curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402  # the backend must be chosen first
import torch  # noqa: E402

from metods_core.run_folder import RunFolder  # noqa: E402
from metods_core.training_log import read_training_log  # noqa: E402


def plot_training_curve(run_dir: Path, column: str = "train/episode_reward") -> Path | None:
    """Plot ``column`` against the outer step into ``RUN_DIR/training_curve.png``."""
    points = read_training_log(run_dir, column)
    if not points:
        return None
    steps, values = zip(*points, strict=True)
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(steps, values, linewidth=1)
    axis.set_xlabel("outer step")
    axis.set_ylabel(column.split("/")[-1].replace("_", " "))
    axis.set_title(f"training: {run_dir.name}")
    axis.grid(alpha=0.3)
    path = RunFolder(run_dir).training_curve
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_curves(
    run_dir: Path, summary: dict[str, Any], metrics: dict[str, torch.Tensor], tag: str = ""
) -> list[Path]:
    """Plot each curve metric (``(tasks, K)``, such as accuracy per presentation) with its CI.

    Each curve goes to ``RUN_DIR/<name><tag>.png`` and ``RUN_DIR/<name><tag>.csv`` (index,
    mean, ci95); ``tag`` tells evaluations under different overrides apart.
    """
    paths = []
    for name, values in metrics.items():
        if values.dim() != 2:
            continue
        means = summary[name]
        means = [math.nan if m is None else m for m in means]
        errors = [0.0 if e is None or math.isnan(e) else e for e in summary[f"{name}_ci95"]]
        index = list(range(1, len(means) + 1))
        figure, axis = plt.subplots(figsize=(6, 4))
        if len(index) <= 20:  # a few presentations or episodes: one marker each
            axis.errorbar(index, means, yerr=errors, marker="o", capsize=3)
            axis.set_xticks(index)
        else:  # a long curve (reward per time-step): a line and a shaded 95 % band
            low = [m - e for m, e in zip(means, errors, strict=True)]
            high = [m + e for m, e in zip(means, errors, strict=True)]
            axis.plot(index, means, linewidth=1)
            axis.fill_between(index, low, high, alpha=0.3)
        axis.set_xlabel("index (presentation, episode, time-step...)")
        axis.set_ylabel(name.replace("_", " "))
        axis.set_title(f"held-out tasks: {run_dir.name}{tag}")
        axis.grid(alpha=0.3)
        run = RunFolder(run_dir)
        _write_curve_csv(run.curve(name, tag, ".csv"), means, summary[f"{name}_ci95"])
        path = run.curve(name, tag)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


def _write_curve_csv(path: Path, means: list[float], errors: list[float | None]) -> None:
    """Write a curve as ``index,mean,ci95`` rows (index from 1; empty where undefined)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "mean", "ci95"])
        for k, (mean, error) in enumerate(zip(means, errors, strict=True), start=1):
            writer.writerow(
                [
                    k,
                    "" if math.isnan(mean) else mean,
                    "" if error is None or math.isnan(error) else error,
                ]
            )
