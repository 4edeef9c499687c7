"""Errors a user can cause, each with a message that says what is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path


class MetodsError(Exception):
    """Base class of every error that metods reports to a user without a traceback."""


class TrainingInterrupted(MetodsError):
    """Training stopped on Ctrl+C (SIGINT) after saving the outer step it had reached."""

    def __init__(self, run_dir: Path, step: int) -> None:
        self.run_dir, self.step = run_dir, step
        super().__init__(
            f"interrupted at outer step {step}; its checkpoint is saved. Continue with: "
            f"metods train --resume {run_dir}"
        )
