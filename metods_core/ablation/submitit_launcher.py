"""Run each run of an ablation as a SLURM job through submitit (or as submitit local processes).

The driver (``metods ablate``) plans and decides as for the local launcher, submits one job per
run that still needs work (a SLURM job array, ``array_parallelism`` at a time), waits for them
and writes the same reports. A job runs the same commands as the local launcher on the node
(``metods train`` or ``--resume``, then ``metods evaluate``) with its output appended to
``OUT/runs/<run>.log``; submitit's own logs go to ``OUT/submitit``. A job that reaches its time
limit or is preempted is requeued by submitit (``checkpoint``) and resumes the run from its
last checkpoint. The output folder must be on a filesystem the nodes share.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from metods_core.ablation._node import RunOnNode
from metods_core.ablation.jobs import (
    DONE_ACTIONS,
    StagesResult,
    log_path_of,
    prepare_run_dir,
    stage_commands,
    stages_outcome,
    thread_env,
)
from metods_core.ablation.launcher import LaunchContext, Launcher, PendingRun
from metods_core.ablation.state import RunOutcome, record_outcome
from metods_core.errors import MetodsError
from metods_core.interfaces.config import ComponentConfig

_POLL_S = {"slurm": 15.0, "local": 0.5}
"""Seconds between checks of the jobs (submitit rate-limits its sacct calls on SLURM)."""


class SubmititLauncher(Launcher):
    """Submit each run as a SLURM job through submitit (cluster: local for plain processes)."""

    class Config(ComponentConfig):
        """Options of the submitit launcher (SLURM resources are per run)."""

        cluster: Literal["slurm", "local"] = "slurm"
        """slurm: submit with sbatch; local: submitit's local processes (tests, one machine)."""
        partition: str | None = None
        """SLURM partition (None: the cluster's default)."""
        time_min: int = Field(default=60, gt=0)
        """Time limit of each run's job, in minutes; a run that reaches it is requeued."""
        gpus_per_run: int = Field(default=0, ge=0)
        """GPUs of each run's job; set trainer.accelerator/devices in the recipe to use them."""
        cpus_per_run: int = Field(default=1, gt=0)
        """CPUs of each run's job; also the torch threads of its processes."""
        mem_gb: float | None = Field(default=None, gt=0)
        """Memory of each run's job in GB (None: the partition's default)."""
        array_parallelism: int = Field(default=64, gt=0)
        """Runs running at a time (SLURM array throttle; local: jobs at a time)."""
        account: str | None = None
        """SLURM account to charge (None: your default)."""
        qos: str | None = None
        """SLURM quality of service (None: the default)."""
        constraint: str | None = None
        """SLURM node constraint, e.g. a GPU model (None: any node of the partition)."""
        setup: list[str] = Field(default_factory=list)
        """Shell lines run before each job, e.g. `module load cuda`."""
        max_requeues: int = Field(default=3, ge=0)
        """Times a run's job is requeued after reaching its time limit or being preempted."""
        folder: str | None = None
        """Folder of submitit's job files and logs (None: OUT/submitit)."""

    config: Config

    def threads_per_run(self) -> int:
        """Return the CPUs of each run's job."""
        return self.config.cpus_per_run

    def describe(self) -> str:
        """Say where runs go and with what resources."""
        c = self.config
        where = f"submitit {c.cluster}" + (f" partition {c.partition}" if c.partition else "")
        return (
            f"{where}, {c.array_parallelism} at a time, each {c.gpus_per_run} GPU, "
            f"{c.cpus_per_run} CPU, {c.time_min} min"
        )

    def create_executor(self, folder: Path, name: str) -> Any:
        """Return the submitit executor for this configuration (folder: its job files)."""
        try:
            import submitit
        except ImportError as exc:
            raise MetodsError("the submitit launcher needs submitit: pip install submitit") from exc
        c = self.config
        try:
            executor = submitit.AutoExecutor(
                folder=folder, cluster=c.cluster, slurm_max_num_timeout=c.max_requeues
            )
        except RuntimeError as exc:  # submitit: no `srun` on this machine
            raise MetodsError(
                f"launcher submitit: {exc} Run `metods ablate` on a SLURM login node, or set "
                "cluster: local to run the jobs as processes of this machine"
            ) from None
        parameters: dict[str, Any] = {
            "name": f"metods-{name}",
            "timeout_min": c.time_min,
            "gpus_per_node": c.gpus_per_run,
            "cpus_per_task": c.cpus_per_run,
            "tasks_per_node": 1,
            "nodes": 1,
            "mem_gb": c.mem_gb,
            "slurm_array_parallelism": c.array_parallelism,
            "slurm_setup": c.setup or None,
        }
        slurm = {"partition": c.partition, "account": c.account, "qos": c.qos,
                 "constraint": c.constraint}  # fmt: skip
        parameters |= {f"slurm_{key}": value for key, value in slurm.items() if value is not None}
        executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
        return executor

    def launch(self, runs: Sequence[PendingRun], context: LaunchContext) -> None:
        """Submit a job per run, wait for them, report each as it ends; cancel them on error."""
        folder = Path(self.config.folder) if self.config.folder else context.out / "submitit"
        executor = self.create_executor(folder, context.out.name)
        env = thread_env(self.threads_per_run())
        waiting = deque(runs)
        active: list[tuple[PendingRun, Any, int]] = []
        total, done_count = len(runs), 0
        try:
            while waiting or active:
                active += self._submit(executor, waiting, len(active), env, context)
                time.sleep(_POLL_S[self.config.cluster])
                for item in [item for item in active if item[1].done()]:
                    active.remove(item)
                    done_count += 1
                    context.echo(f"[{done_count}/{total} done] {item[0].run.name}")
                    context.on_done(_outcome(*item))
        finally:  # Ctrl-C or an error here: leave no job running unsupervised
            for _, job, _ in active:
                with contextlib.suppress(Exception):
                    job.cancel(check=False)

    def _submit(
        self,
        executor: Any,
        waiting: deque[PendingRun],
        running: int,
        env: dict[str, str],
        context: LaunchContext,
    ) -> list[tuple[PendingRun, Any, int]]:
        """Submit what may start now: all at once as a SLURM array, else up to the throttle."""
        count = len(waiting)
        if self.config.cluster != "slurm":
            count = min(count, self.config.array_parallelism - running)
        chosen = [waiting.popleft() for _ in range(max(count, 0))]
        if not chosen:
            return []
        offsets = []
        for pending in chosen:
            prepare_run_dir(pending.run, pending.decision)
            log = log_path_of(pending.run)
            offsets.append(log.stat().st_size if log.exists() else 0)
        tasks = [RunOnNode(p.run, stage_commands(p.run, p.decision), env) for p in chosen]
        jobs = executor.submit_array(tasks)  # one SLURM array per submission
        for pending, job in zip(chosen, jobs, strict=True):
            verb = pending.decision.action
            context.echo(f"submitted {pending.run.name} ({verb}) as job {job.job_id}")
        return list(zip(chosen, jobs, offsets, strict=True))


def _outcome(pending: PendingRun, job: Any, offset: int) -> RunOutcome:
    """Return the run's outcome from its job: its commands' exit, or why the job failed."""
    log_path = log_path_of(pending.run)
    try:
        result = job.result()
    except Exception as exc:  # the job itself failed: cancelled, out of time, node failure
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        error = f"job {job.job_id} failed: {lines[0]} (submitit log: {job.paths.stderr})"
        action = DONE_ACTIONS[pending.decision.action]
        outcome = RunOutcome(pending.run, "failed", action, None, error, lines[-15:])
        return record_outcome(outcome)
    if not isinstance(result, StagesResult):
        result = StagesResult(1, "job", 0.0, offset)
    return stages_outcome(pending.run, pending.decision, result, log_path)
