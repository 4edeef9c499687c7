"""Ablations: a grid of recipe variants x seeds -> run directories -> a results table and plots.

``metods ablate`` builds an ``Ablation`` (from an ablation file with ``load_ablation``, or from
a recipe and ``--grid`` arguments with ``ablation_from_grid``) and runs it with
``run_ablation``: every run's recipe is validated first, then runs are trained and evaluated
by the ablation's launcher (``launcher.Launcher``: local processes, or SLURM jobs through
submitit), and ``OUT`` receives ``results.csv``, ``summary.md``, ``ablation.png`` and
``ablation.json``. Running the same command again resumes it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metods_core.ablation.plan import PlannedRun, plan_runs
    from metods_core.ablation.report import mean_curve, results_rows, summarise
    from metods_core.ablation.runner import AblationResult, run_ablation, threads_per_job
    from metods_core.ablation.spec import (
        RECIPE_AXIS,
        Ablation,
        AblationError,
        ablation_from_grid,
        is_ablation_file,
        load_ablation,
    )
    from metods_core.ablation.state import Decision, RunOutcome, inspect_run

_EXPORTS = {
    "PlannedRun": "plan", "plan_runs": "plan",
    "mean_curve": "report", "results_rows": "report", "summarise": "report",
    "AblationResult": "runner", "run_ablation": "runner", "threads_per_job": "runner",
    "RECIPE_AXIS": "spec", "Ablation": "spec", "AblationError": "spec",
    "ablation_from_grid": "spec", "is_ablation_file": "spec", "load_ablation": "spec",
    "Decision": "state", "RunOutcome": "state", "inspect_run": "state",
}  # fmt: skip
"""Public name -> the submodule that defines it."""


def __getattr__(name: str) -> Any:
    """Import the public names on first use (PEP 562).

    A submitit job unpickles its task from ``metods_core.ablation``; importing every submodule
    here would load torch and Lightning into a process that only starts ``metods`` children.
    """
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = [
    "RECIPE_AXIS",
    "Ablation",
    "AblationError",
    "AblationResult",
    "Decision",
    "PlannedRun",
    "RunOutcome",
    "ablation_from_grid",
    "inspect_run",
    "is_ablation_file",
    "load_ablation",
    "mean_curve",
    "plan_runs",
    "results_rows",
    "run_ablation",
    "summarise",
    "threads_per_job",
]
