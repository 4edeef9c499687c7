"""Ctrl+C: the current outer step is saved, the exit status is 130, the resume command is
printed, and resuming from it equals a run never interrupted."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metods_core.recipe import load_recipe
from metods_core.training import resume_run, train_recipe
from metods_core.training.checkpoints import checkpoint_outer_step, read_checkpoint

HARLOW = Path(__file__).resolve().parents[2] / "recipes" / "harlow" / "metods.yaml"
TINY = [
    "data.batch_tasks=4",
    "plasticity.recursion_steps=1",
    "trainer.compile=false",
    "logger.wandb.mode=disabled",
    "trainer.num_threads=1",
    "trainer.checkpoint_every_n_steps=1000",
]


@pytest.mark.slow
def test_sigint_saves_the_step_and_prints_the_resume_command(tmp_path: Path) -> None:
    """SIGINT during training exits 130 with `metods train --resume DIR`; the checkpoint of
    the step reached resumes to the same weights as an uninterrupted run."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "metods_core.cli", "train", str(HARLOW), *TINY]
    process = subprocess.Popen(
        [*command, "trainer.max_steps=100000", "--run-dir", str(run)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    deadline = time.time() + 120
    while not (run / "recipe.yaml").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(4)  # a few outer steps
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert f"metods train --resume {run}" in err and "Traceback" not in err
    step = int(re.search(r"interrupted at outer step (\d+)", err).group(1))  # type: ignore[union-attr]
    assert step > 0
    assert checkpoint_outer_step(read_checkpoint(run / "checkpoints" / "last.ckpt")) == step
    resume_run(run, [f"trainer.max_steps={step + 2}"])
    whole = train_recipe(
        load_recipe(HARLOW, [*TINY, f"trainer.max_steps={step + 2}"]), tmp_path / "w"
    )
    first = read_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    second = read_checkpoint(whole / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(first[key], second[key]) for key in first)
