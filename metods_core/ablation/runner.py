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
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO

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
from metods_core.errors import MetodsError
from metods_core.training.checkpoints import list_checkpoints

_TAIL_LINES = 15


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
        plan = {
            "name": ablation.name,
            "source": ablation.source,
            "base": str(ablation.base) if ablation.base else None,
            "grid": ablation.grid,
            "seeds": ablation.seeds,
            "overrides": ablation.overrides,
            "jobs": jobs,
            "threads_per_run": threads,
            "command": command,
            "runs": [{**run.to_json(), "action": decisions[run.name].action} for run in runs],
        }
        (out / "ablation.json").write_text(json.dumps(plan, indent=2, default=str) + "\n")
        cores = threads_per_job(1)
        if jobs > cores:
            echo(
                f"note: {jobs} jobs on {cores} cores oversubscribe the CPU; consider --jobs {cores}"
            )
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env["PYTHONUNBUFFERED"] = "1"
        outcomes: dict[str, RunOutcome] = {}
        pending: deque[_Job] = deque()
        for run in runs:
            decision = decisions[run.name]
            if decision.action == "skip":
                outcomes[run.name] = finished_outcome(run, "skipped", None)
            elif decision.action == "broken":
                outcomes[run.name] = record_outcome(
                    RunOutcome(run, "failed", "none", error=decision.problem)
                )
            else:
                pending.append(_Job(run, decision, env, lock_fd))
        echo(
            f"ablation {ablation.name}: {len(runs)} runs, {len(pending)} to do, {jobs} at a time "
            f"({threads} thread{'s' if threads > 1 else ''} each); output in {out}"
        )

        def report() -> list[Path]:
            ordered = [outcomes[run.name] for run in runs if run.name in outcomes]
            return write_tables(out, ablation, ordered, command, time.monotonic() - started)

        active: list[_Job] = []
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
                    outcome = job.outcome()
                    outcomes[outcome.run.name] = outcome
                    echo(f"  {outcome.run.name}: {_summary_line(outcome)}")
                    report()
        finally:
            for job in active:
                job.stop()
        files = [*report(), write_plot(out, [outcomes[run.name] for run in runs])]
    return AblationResult([outcomes[run.name] for run in runs], time.monotonic() - started, files)


class _Job:
    """The processes of one run: train (or resume) then evaluate, one after the other."""

    def __init__(
        self, run: PlannedRun, decision: Decision, env: dict[str, str], lock_fd: int | None
    ) -> None:
        self.run, self.decision, self.env, self.lock_fd = run, decision, env, lock_fd
        self.log_path = run.run_dir.parent / f"{run.name}.log"
        self.stages = _stages(run, decision)
        self.process: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None
        self.stage, self.start_offset, self.seconds, self.returncode = "", 0, 0.0, 0
        self.stage_started = 0.0

    def describe(self) -> str:
        verbs = {"train": "training", "restart": "restarting (no checkpoint was saved)",
                 "resume": "resuming", "evaluate": "evaluating"}  # fmt: skip
        return f"{self.run.name}: {verbs[self.decision.action]} (log: {self.log_path})"

    def start(self) -> None:
        run_dir = self.run.run_dir
        if self.decision.action == "restart" and run_dir.exists():
            if list_checkpoints(run_dir):  # checked again: never delete a checkpoint
                raise MetodsError(f"{run_dir} gained a checkpoint; is another ablation running?")
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("ab")
        self.start_offset = self.log.tell()
        self._next_stage()

    def _next_stage(self) -> None:
        assert self.log is not None
        self.stage, command = self.stages.pop(0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.log.write(f"\n=== {stamp} {' '.join(command)}\n".encode())
        self.log.flush()
        self.stage_started = time.monotonic()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            pass_fds=() if self.lock_fd is None else (self.lock_fd,),  # held while it lives
        )

    def poll(self) -> bool:
        """Advance through the stages; return True once the run has ended."""
        assert self.process is not None
        returncode = self.process.poll()
        if returncode is None:
            return False
        self.seconds += time.monotonic() - self.stage_started
        self.returncode = returncode
        if returncode == 0 and self.stages:
            self._next_stage()
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()

    def outcome(self) -> RunOutcome:
        self.stop()
        action = {"train": "trained", "restart": "restarted", "resume": "resumed",
                  "evaluate": "evaluated"}[self.decision.action]  # fmt: skip
        if self.returncode == 0:
            return finished_outcome(self.run, action, self.seconds)
        tail = _log_tail(self.log_path, self.start_offset)
        errors = [line for line in tail if line.startswith("error:")]
        reason = (errors or tail or ["(no output)"])[-1]
        error = f"{self.stage} exited with status {self.returncode}: {reason}"
        outcome = RunOutcome(self.run, "failed", action, self.seconds, error, tail)
        return record_outcome(outcome, add_time=True)


def _stages(run: PlannedRun, decision: Decision) -> list[tuple[str, list[str]]]:
    cli = [sys.executable, "-m", "metods_core.cli"]
    run_dir = str(run.run_dir)
    kept = [o for o in run.overrides if o.startswith(("trainer.num_threads=", "logger.wandb."))]
    stages = []
    if decision.action in ("train", "restart"):
        stages.append(
            ("train", [*cli, "train", str(run.recipe), *run.overrides, "--run-dir", run_dir])
        )
    elif decision.action == "resume":
        resume = [*cli, "train", "--resume", run_dir, f"trainer.max_steps={run.max_steps}", *kept]
        if decision.checkpoint is not None:
            resume += ["--checkpoint", str(decision.checkpoint)]
        stages.append(("train", resume))
    evaluate = [*cli, "evaluate", run_dir, "--json", "--episodes", str(run.episodes)]
    stages.append(("evaluate", [*evaluate, *(["--greedy"] if run.greedy else [])]))
    return stages


def _log_tail(path: Path, offset: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    lines = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-_TAIL_LINES:]


def _summary_line(outcome: RunOutcome) -> str:
    if outcome.status != "done":
        return f"FAILED: {outcome.error}"
    evaluation = outcome.evaluation or {}
    seconds = f" in {outcome.wall_time_s:.0f} s" if outcome.wall_time_s is not None else ""
    key = main_metric_key(evaluation)
    return f"{outcome.action}{seconds}; {key} {evaluation.get(key)}"
