"""What a submitit job runs on its node: one run's commands, under a per-run lock.

This module imports neither torch nor the recipe machinery: the job process only starts the
``metods`` child processes that do the work, so it should start in a fraction of a second. The
planned run travels pickled and is unpickled (which imports torch) only after a requeue, when
the job has to decide again what the run needs.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metods_core.ablation.jobs import StagesResult, run_stages
from metods_core.run_folder import RunFolder

if TYPE_CHECKING:
    from metods_core.ablation.plan import PlannedRun


class RunOnNode:
    """The callable a submitit job executes: run the stages, or decide them after a requeue."""

    def __init__(
        self, run: PlannedRun, stages: list[tuple[str, list[str]]] | None, env: dict[str, str]
    ) -> None:
        self.name, self.runs_dir = run.name, run.run_dir.parent
        self.planned = pickle.dumps(run)  # unpickled only after a requeue (see module doc)
        self.stages, self.env = stages, env

    @property
    def log_path(self) -> Path:
        """The run's log (beside its run folder)."""
        return RunFolder(self.runs_dir / self.name).log

    def __call__(self) -> StagesResult:
        """Run the stages (decided again from the run directory after a requeue)."""
        with _run_lock(RunFolder(self.runs_dir / self.name).lock) as held:
            if not held:
                return _refuse(self.log_path, "another job is still running this run; wait for it")
            stages = self.stages
            if stages is None:  # requeued: the run directory says what is left
                from metods_core.ablation.jobs import prepare_run_dir, stage_commands
                from metods_core.ablation.state import inspect_run

                run = pickle.loads(self.planned)
                decision = inspect_run(run)
                if decision.action == "skip":
                    return StagesResult(0, "", 0.0, 0)
                if decision.problem is not None:
                    return _refuse(self.log_path, decision.problem)
                prepare_run_dir(run, decision)
                stages = stage_commands(run, decision)
            return run_stages(stages, self.log_path, self.env)

    def checkpoint(self) -> Any:
        """Requeue after a time limit or preemption (submitit calls this): decide again then."""
        import submitit

        again = RunOnNode.__new__(RunOnNode)
        again.__dict__.update(self.__dict__, stages=None)
        return submitit.helpers.DelayedSubmission(again)


@contextlib.contextmanager
def _run_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` while a job works on the run; yield False if
    another process holds it."""
    try:
        import fcntl
    except ImportError:  # no flock: run unguarded
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _refuse(log_path: Path, why: str) -> StagesResult:
    """Write ``why`` as the run's error into its log; return a failed result."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        offset = log.tell()
        log.write(f"\nerror: {why}\n".encode())
    return StagesResult(1, "job", 0.0, offset)
