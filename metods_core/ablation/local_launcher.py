"""The default launcher: each run in child processes of ``metods ablate``, J at a time."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence

from pydantic import Field

from metods_core.ablation.jobs import RunJob, thread_env
from metods_core.ablation.launcher import LaunchContext, Launcher, PendingRun
from metods_core.interfaces.config import ComponentConfig


def threads_per_job(jobs: int) -> int:
    """Return torch threads per run so that ``jobs`` parallel runs do not oversubscribe the CPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // jobs)


class LocalLauncher(Launcher):
    """Run each run as child processes on this machine, `jobs` at a time."""

    class Config(ComponentConfig):
        """Options of the local launcher."""

        jobs: int = Field(default=1, gt=0)
        """Runs trained at a time; the machine's cores are shared out between them."""

    config: Config

    def threads_per_run(self) -> int:
        """Return this machine's cores divided by the number of runs at a time (at least 1)."""
        return threads_per_job(self.config.jobs)

    def describe(self) -> str:
        """Say how many runs go at a time, with how many threads."""
        threads = self.threads_per_run()
        return f"{self.config.jobs} at a time ({threads} thread{'s' if threads > 1 else ''} each)"

    def launch(self, runs: Sequence[PendingRun], context: LaunchContext) -> None:
        """Keep ``jobs`` runs going until none is left; stop the running ones on any exception."""
        jobs = self.config.jobs
        cores = threads_per_job(1)
        if jobs > cores:
            context.echo(
                f"note: {jobs} jobs on {cores} cores oversubscribe the CPU; consider --jobs {cores}"
            )
        env = dict(os.environ, **thread_env(self.threads_per_run()))
        pending = deque(RunJob(p.run, p.decision, env, context.lock_fd) for p in runs)
        active: list[RunJob] = []
        total, done_count = len(pending), 0
        try:
            while pending or active:
                while pending and len(active) < jobs:
                    job = pending.popleft()
                    context.echo(f"[{done_count + len(active) + 1}/{total}] {job.describe()}")
                    job.start()
                    active.append(job)
                time.sleep(0.2)
                for job in [job for job in active if job.poll()]:
                    active.remove(job)
                    done_count += 1
                    context.on_done(job.outcome())
        finally:  # Ctrl-C or an error here: leave no run training unsupervised
            for job in active:
                job.stop()
