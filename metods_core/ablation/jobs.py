"""The child processes of one run: ``metods train`` (or ``--resume``), then ``metods evaluate``,
or with the ablation's ``impairment`` ``metods impairment`` (whose intact evaluation is the
evaluate stage's).

Each process runs ``python -m metods_core.cli`` with its output appended to
``OUT/runs/<run>.log`` and the thread variables set for its share of the cores. ``RunJob``
drives them without blocking (the local launcher keeps several going); ``run_stages`` runs
them one after the other and blocks, for launchers that execute a run elsewhere (a SLURM job).
Both end in ``stages_outcome``, so every launcher reports a run the same way.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from metods_core.errors import MetodsError
from metods_core.run_folder import RunFolder

if TYPE_CHECKING:  # imported where used: a SLURM job runs its stages without torch
    from metods_core.ablation.plan import PlannedRun
    from metods_core.ablation.state import Decision, RunOutcome

_TAIL_LINES = 15
"""Lines of a failed run's log kept in its status and in summary.md."""
_PROGRESS = re.compile(r"^[^\n]*(?:\d+%\||\d+/\?? *\[)[^\n]*?(?:it/s|s/it|\?it/s)[^\]\n]*\]", re.M)
"""A progress bar's text (``Epoch 0:  67%|###   | 2/3 [00:01<00:00,  1.61it/s, v_num=0]``), which
an error message may follow on the same line."""


DONE_ACTIONS = {"train": "trained", "restart": "restarted", "resume": "resumed",
                "evaluate": "evaluated"}  # fmt: skip
"""A decision's action -> what a run's outcome says was done."""


class RunJob:
    """The processes of one run: train (or resume), then evaluate or impairment, one after the
    other."""

    def __init__(
        self, run: PlannedRun, decision: Decision, env: dict[str, str], lock_fd: int | None
    ) -> None:
        self.run, self.decision, self.env, self.lock_fd = run, decision, env, lock_fd
        self.log_path = log_path_of(run)
        self.stages = _stages(run, decision)
        self.process: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None
        self.stage, self.start_offset, self.seconds, self.returncode = "", 0, 0.0, 0
        self.stage_started = 0.0

    def describe(self) -> str:
        """Say what this job does and where its log is."""
        verbs = {"train": "training", "restart": "restarting (no checkpoint was saved)",
                 "resume": "resuming", "evaluate": "evaluating"}  # fmt: skip
        return f"{self.run.name}: {verbs[self.decision.action]} (log: {self.log_path})"

    def start(self) -> None:
        """Start the first process (after deleting a partial run that saved no checkpoint)."""
        prepare_run_dir(self.run, self.decision)
        self.log = self.log_path.open("ab")
        self.start_offset = self.log.tell()
        self._next_stage()

    def _next_stage(self) -> None:
        assert self.log is not None
        self.stage, command = self.stages.pop(0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.log.write(f"\n=== {stamp} {shlex.join(command)}\n".encode())
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
        """Terminate the running process, if any, and close the log."""
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
        """Record and return how the run ended (call once ``poll`` returned True)."""
        self.stop()
        result = StagesResult(self.returncode, self.stage, self.seconds, self.start_offset)
        return stages_outcome(self.run, self.decision, result, self.log_path)


@dataclasses.dataclass(frozen=True)
class StagesResult:
    """How a run's processes ended: the last stage's exit status, and where its log starts."""

    returncode: int
    stage: str
    """The stage that ended last: train, evaluate or impairment."""
    seconds: float
    """Wall time of the stages, summed."""
    start_offset: int
    """Size of the log before this invocation appended to it."""


def prepare_run_dir(run: PlannedRun, decision: Decision) -> None:
    """Delete a partial run that saved no checkpoint (``restart``); create ``OUT/runs``."""
    from metods_core.training.checkpoints import list_checkpoints

    run_dir = run.run_dir
    if decision.action == "restart" and run_dir.exists():
        if list_checkpoints(run_dir):  # checked again: never delete a checkpoint
            raise MetodsError(f"{run_dir} gained a checkpoint; is another ablation running?")
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)


def log_path_of(run: PlannedRun) -> Path:
    """Return the log file of ``run``'s processes (beside its run folder)."""
    return RunFolder(run.run_dir).log


def thread_env(threads: int) -> dict[str, str]:
    """Return the environment variables that give a run's processes ``threads`` threads."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1"}  # fmt: skip


def stage_commands(run: PlannedRun, decision: Decision) -> list[tuple[str, list[str]]]:
    """Return the (stage, command) pairs ``decision`` calls for: train or resume, then evaluate
    (or, with the ablation's ``impairment``, impairment)."""
    return _stages(run, decision)


def run_stages(
    stages: list[tuple[str, list[str]]], log_path: Path, env: dict[str, str]
) -> StagesResult:
    """Run ``stages`` one after the other, appending to ``log_path``; stop at the first failure.

    ``env`` is added to this process's environment. Blocks until the last stage ends.
    """
    full_env = dict(os.environ, **env)
    seconds, returncode, last = 0.0, 0, ""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        start_offset = log.tell()
        for stage, command in stages:
            last = stage
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {stamp} {shlex.join(command)}\n".encode())
            log.flush()
            started = time.monotonic()
            done = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=full_env, check=False,
            )  # fmt: skip
            seconds += time.monotonic() - started
            returncode = done.returncode
            if returncode != 0:
                break
    return StagesResult(returncode, last, seconds, start_offset)


def stages_outcome(
    run: PlannedRun, decision: Decision, result: StagesResult, log_path: Path
) -> RunOutcome:
    """Record and return how the run ended, from its processes' exit and its log."""
    from metods_core.ablation.state import RunOutcome, finished_outcome, record_outcome

    action = DONE_ACTIONS[decision.action]
    if result.returncode == 0:
        return finished_outcome(run, action, result.seconds)
    tail = _log_tail(log_path, result.start_offset)
    errors = [line[line.index("error:") :] for line in tail if "error:" in line]
    reason = (errors or tail or ["(no output)"])[-1]
    error = f"{result.stage} exited with status {result.returncode}: {reason}"
    outcome = RunOutcome(run, "failed", action, result.seconds, error, tail)
    return record_outcome(outcome, add_time=True)


def _stages(run: PlannedRun, decision: Decision) -> list[tuple[str, list[str]]]:
    """Return the (stage, command) pairs ``decision`` calls for: train or resume, then evaluate;
    with ``run.impairment``, the impairment evaluations instead of evaluate (intact, which writes
    the run's evaluation file, then each actuator disabled: the run's record, which the
    ablation's report scores).

    A resumed run gets the plan's ``trainer.max_steps``, threads and W&B settings as overrides.
    """
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
    evaluated = [run_dir, "--json", "--episodes", str(run.episodes)]
    evaluated += [] if run.checkpoint == "last" else ["--checkpoint", run.checkpoint]
    if run.impairment:
        # Its intact evaluation is the evaluate stage's (the same evaluation file, on the plan's
        # episodes, greedy or not as the run's recipe says, as the plan's is), so it replaces it.
        stages.append(("impairment", [*cli, "impairment", *evaluated]))
    else:
        greedy = ["--greedy"] if run.greedy else []
        stages.append(("evaluate", [*cli, "evaluate", *evaluated, *greedy]))
    return stages


def _log_tail(path: Path, offset: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    text = _PROGRESS.sub("\n", text.replace("\r", "\n"))  # progress bars say nothing here
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return lines[-_TAIL_LINES:]
