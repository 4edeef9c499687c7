"""Run an ablation's runs through its launcher; resume what was interrupted.

Each run is an ordinary run directory, trained with ``python -m metods_core.cli train`` and then
evaluated with ``python -m metods_core.cli evaluate``, with its output in ``OUT/runs/<run>.log``.
What a run needs is decided here, from its directory alone (``state.inspect_run``), so running
the same command again after a crash or a kill finishes the ablation without redoing finished
runs, whichever launcher executes them (``launcher.Launcher``: local processes by default).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from metods_core.ablation.launcher import LaunchContext, Launcher, PendingRun
from metods_core.ablation.launcher_options import as_section, create_launcher
from metods_core.ablation.local_launcher import threads_per_job
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
from metods_core.registry import PluginError

__all__ = ["AblationResult", "run_ablation", "threads_per_job"]


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


def run_ablation(
    ablation: Ablation,
    jobs: int | None = None,
    command: str = "",
    echo: Callable[[str], None] = print,
) -> AblationResult:
    """Validate and plan every run, then train and evaluate what is not done, through the
    ablation's launcher (``jobs``, if given, sets the local launcher's runs at a time).

    Raises:
        AblationError: a run's recipe or the launcher's options are invalid, or ``OUT`` holds
            runs of another plan; nothing was started.
    """
    started = time.monotonic()
    section = dict(ablation.launcher)
    if jobs is not None:
        section["jobs"] = jobs
    try:
        launcher: Launcher = create_launcher(section)
    except PluginError as exc:
        where = f"ablation {ablation.source or ablation.out}"
        raise AblationError(str(exc).splitlines(), where) from None
    threads = launcher.threads_per_run()
    runs = plan_runs(ablation, threads)
    out = ablation.out
    out.mkdir(parents=True, exist_ok=True)
    with hold_lock(out / ".ablation.lock") as lock_fd:
        decisions = {run.name: inspect_run(run) for run in runs}
        conflicts = [d.problem for d in decisions.values() if d.action == "conflict" and d.problem]
        if conflicts:
            raise AblationError(conflicts, f"ablation output {out}")
        plan = {"launcher": as_section(launcher, section.get("name", "local")),
                "threads_per_run": threads, "command": command}  # fmt: skip
        _write_plan(out / "ablation.json", ablation, runs, decisions, plan)
        outcomes: dict[str, RunOutcome] = {}
        pending: list[PendingRun] = []
        for run in runs:
            decision = decisions[run.name]
            if decision.action == "skip":
                outcomes[run.name] = finished_outcome(run, "skipped", None)
            elif decision.action == "broken":
                outcomes[run.name] = record_outcome(
                    RunOutcome(run, "failed", "none", error=decision.problem)
                )
            else:
                pending.append(PendingRun(run, decision))
        echo(
            f"ablation {ablation.name}: {len(runs)} runs, {len(pending)} to do, "
            f"{launcher.describe()}; output in {out}"
        )

        def report() -> list[Path]:
            ordered = [outcomes[run.name] for run in runs if run.name in outcomes]
            return write_tables(out, ablation, ordered, command, time.monotonic() - started)

        def on_done(outcome: RunOutcome) -> None:
            outcomes[outcome.run.name] = outcome
            echo(f"  {outcome.run.name}: {_summary_line(outcome)}")
            report()

        launcher.launch(pending, LaunchContext(out, lock_fd, on_done, echo))
        missing = [run.name for run in runs if run.name not in outcomes]
        if missing:
            raise AblationError([f"the launcher reported no outcome for {', '.join(missing)}"],
                                f"ablation {ablation.name}")  # fmt: skip
        files = [*report(), write_plot(out, [outcomes[run.name] for run in runs])]
    return AblationResult([outcomes[run.name] for run in runs], time.monotonic() - started, files)


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
        "impairment": ablation.impairment,
        "checkpoint": ablation.checkpoint,
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
