"""Ablations: a grid of recipe variants x seeds -> run directories -> a results table and plots.

``metods ablate`` builds an ``Ablation`` (from an ablation file with ``load_ablation``, or from
a recipe and ``--grid`` arguments with ``ablation_from_grid``) and runs it with
``run_ablation``: every run's recipe is validated first, then runs are trained and evaluated
in child processes, ``jobs`` at a time, and ``OUT`` receives ``results.csv``, ``summary.md``,
``ablation.png`` and ``ablation.json``. Running the same command again resumes it.
"""

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
