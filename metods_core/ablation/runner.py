"""Run an ablation's runs, J at a time, each in its own processes; resume what was interrupted.

Each run is an ordinary run directory, trained with ``python -m metods_core.cli train`` and then
evaluated with ``python -m metods_core.cli evaluate``, with its output in ``OUT/runs/<run>.log``.
What a run needs is decided from its directory alone (``state.inspect_run``), so running the
same command again after a crash or a kill finishes the ablation without redoing finished runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from metods_core.ablation.jobs import RunJob
from metods_core.ablation.lock import hold_lock
from metods_core.ablation.plan import PlannedRun, plan_runs
from metods_core.ablation.report import main_metric_key, write_plot, write_tables
from metods_core.ablation.spec import Ablation, AblationError
from metods_core.ablation.state import (
    Decision,
    RunOutcome,
    finished_outcome,
    inspect_run,
    record_outcome,
)


@dataclasses.dataclass
class AblationResult:
    """Every run's outcome and the files written."""

    outcomes: list[RunOutcome]
    wall_time_s: float
    files: list[Path]

    @property
    def failed(self) -> list[RunOutcome]:
        """The runs that did not finish."""
        return [outcome for outcome in self.outcomes if outcome.status != "done"]


def threads_per_job(jobs: int) -> int:
    """Return torch threads per run so that ``jobs`` parallel runs do not oversubscribe the CPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // jobs)


def run_ablation(
    ablation: Ablation,
    jobs: int = 1,
    command: str = "",
    echo: Callable[[str], None] = print,
) -> AblationResult:
    """Validate and plan every run, then train and evaluate what is not done, ``jobs`` at a time.

    Raises:
        AblationError: a run's recipe is invalid, or ``OUT`` holds runs of another plan; nothing
            was started.
    """
    started = time.monotonic()
    threads = threads_per_job(jobs)
    runs = plan_runs(ablation, threads)
    out = ablation.out
    out.mkdir(parents=True, exist_ok=True)
    with hold_lock(out / ".ablation.lock") as lock_fd:
        decisions = {run.name: inspect_run(run) for run in runs}
        conflicts = [d.problem for d in decisions.values() if d.action == "conflict" and d.problem]
        if conflicts:
            raise AblationError(conflicts, f"ablation output {out}")
        plan = {"jobs": jobs, "threads_per_run": threads, "command": command}
        _write_plan(out / "ablation.json", ablation, runs, decisions, plan)
        cores = threads_per_job(1)
        if jobs > cores:
            echo(
                f"note: {jobs} jobs on {cores} cores oversubscribe the CPU; consider --jobs {cores}"
            )
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env["PYTHONUNBUFFERED"] = "1"
        outcomes: dict[str, RunOutcome] = {}
        pending: deque[RunJob] = deque()
        for run in runs:
            decision = decisions[run.name]
            if decision.action == "skip":
                outcomes[run.name] = finished_outcome(run, "skipped", None)
            elif decision.action == "broken":
                outcomes[run.name] = record_outcome(
                    RunOutcome(run, "failed", "none", error=decision.problem)
                )
            else:
                pending.append(RunJob(run, decision, env, lock_fd))
        echo(
            f"ablation {ablation.name}: {len(runs)} runs, {len(pending)} to do, {jobs} at a time "
            f"({threads} thread{'s' if threads > 1 else ''} each); output in {out}"
        )

        def report() -> list[Path]:
            ordered = [outcomes[run.name] for run in runs if run.name in outcomes]
            return write_tables(out, ablation, ordered, command, time.monotonic() - started)

        def on_done(outcome: RunOutcome) -> None:
            outcomes[outcome.run.name] = outcome
            echo(f"  {outcome.run.name}: {_summary_line(outcome)}")
            report()

        _schedule(pending, jobs, on_done, echo)
        files = [*report(), write_plot(out, [outcomes[run.name] for run in runs])]
    return AblationResult([outcomes[run.name] for run in runs], time.monotonic() - started, files)


def _schedule(
    pending: deque[RunJob],
    jobs: int,
    on_done: Callable[[RunOutcome], None],
    echo: Callable[[str], None],
) -> None:
    """Keep ``jobs`` runs going until none is left; stop the running ones on any exception."""
    active: list[RunJob] = []
    total, done_count = len(pending), 0
    try:
        while pending or active:
            while pending and len(active) < jobs:
                job = pending.popleft()
                echo(f"[{done_count + len(active) + 1}/{total}] {job.describe()}")
                job.start()
                active.append(job)
            time.sleep(0.2)
            for job in [job for job in active if job.poll()]:
                active.remove(job)
                done_count += 1
                on_done(job.outcome())
    finally:  # Ctrl-C or an error here: leave no run training unsupervised
        for job in active:
            job.stop()


def _write_plan(
    path: Path,
    ablation: Ablation,
    runs: list[PlannedRun],
    decisions: dict[str, Decision],
    extra: dict[str, object],
) -> None:
    """Write ablation.json: the ablation, and every planned run with what this invocation does."""
    plan = {
        "name": ablation.name,
        "source": ablation.source,
        "base": str(ablation.base) if ablation.base else None,
        "grid": ablation.grid,
        "seeds": ablation.seeds,
        "overrides": ablation.overrides,
        "episodes": ablation.episodes,
        **extra,
        "runs": [{**run.to_json(), "action": decisions[run.name].action} for run in runs],
    }
    path.write_text(json.dumps(plan, indent=2, default=str) + "\n")


def _summary_line(outcome: RunOutcome) -> str:
    if outcome.status != "done":
        return f"FAILED: {outcome.error}"
    evaluation = outcome.evaluation or {}
    seconds = f" in {outcome.wall_time_s:.0f} s" if outcome.wall_time_s is not None else ""
    key = main_metric_key(evaluation)
    value = evaluation.get(key)
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{outcome.action}{seconds}; {key} {shown}"
