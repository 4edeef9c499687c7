"""Meta-training through the real Lightning Trainer: run directories, resume, DDP, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metods_core.recipe import load_recipe
from metods_core.training import NonFiniteError, resume_run, train_recipe
from metods_core.training.checkpoints import CheckpointError, read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
HARLOW = ROOT / "recipes" / "harlow" / "metods.yaml"
HELPERS = ROOT / "tests" / "helpers"
TINY = [
    "data.batch_tasks=4",
    "plasticity.recursion_steps=2",
    "trainer.accelerator=cpu",
    "trainer.checkpoint_every_n_steps=2",
    "trainer.log_every_n_steps=1",
    "logger.wandb.mode=disabled",
    "trainer.compile=false",
]


def tiny_recipe(*extra: str):
    return load_recipe(HARLOW, [*TINY, *extra])


def agent_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


def assert_same_state(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs"


def test_train_writes_a_complete_run_directory(tmp_path: Path) -> None:
    """A run directory holds the resolved recipe, versions, CSV metrics and checkpoints."""
    run_dir = train_recipe(tiny_recipe("trainer.max_steps=4"), tmp_path / "run")
    assert (run_dir / "recipe.yaml").is_file()
    versions = json.loads((run_dir / "versions.json").read_text())
    assert versions["packages"]["torch"] and versions["plugins"]["plasticity"]
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} >= {
        "last.ckpt",
        "step=000004.ckpt",
    }
    metrics = (run_dir / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/episode_reward" in metrics and "train/loss" in metrics
    assert "train/rule/memory_decay" in metrics  # Agent.rule_diagnostics, every outer step
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4
    saved = load_recipe(run_dir / "recipe.yaml")
    assert saved.trainer.max_steps == 4 and saved.plasticity.config.recursion_steps == 2


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """Stopping after 3 steps and resuming to 6 gives bit-identical weights and optimizer state."""
    whole = train_recipe(tiny_recipe("trainer.max_steps=6"), tmp_path / "whole")
    part = train_recipe(tiny_recipe("trainer.max_steps=3"), tmp_path / "part")
    resume_run(part, ["trainer.max_steps=6"])
    assert_same_state(agent_state(whole), agent_state(part))
    first = read_checkpoint(whole / "checkpoints" / "last.ckpt")["optimizer_states"][0]["state"]
    second = read_checkpoint(part / "checkpoints" / "last.ckpt")["optimizer_states"][0]["state"]
    for key in first:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(first[key][name], second[key][name])
    assert len(list((part / "logs").glob("version_*"))) == 2


@pytest.mark.slow
def test_resume_after_a_killed_process_equals_uninterrupted(tmp_path: Path) -> None:
    """A training process killed with SIGKILL resumes from its last checkpoint exactly."""
    steps = ["trainer.max_steps=40", "trainer.checkpoint_every_n_steps=5"]
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "metods_core.cli", "train", str(HARLOW), *TINY, *steps]
    process = subprocess.Popen([*command, "--run-dir", str(killed)], cwd=tmp_path)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step=000010.ckpt").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    resume_run(killed)
    whole = train_recipe(tiny_recipe(*steps), tmp_path / "whole")
    assert_same_state(agent_state(whole), agent_state(killed))


def test_corrupt_checkpoint_gives_one_clear_error(tmp_path: Path) -> None:
    """A truncated last.ckpt is reported with the earlier checkpoints to resume from."""
    run_dir = train_recipe(tiny_recipe("trainer.max_steps=4"), tmp_path / "run")
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot be read.*step=000004.ckpt"):
        resume_run(run_dir, ["trainer.max_steps=6"])
    result = subprocess.run(
        [sys.executable, "-m", "metods_core.cli", "train", "--resume", str(run_dir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "cannot be read" in result.stderr and "Traceback" not in result.stderr
    resume_run(
        run_dir, ["trainer.max_steps=6"], checkpoint=run_dir / "checkpoints" / "step=000004.ckpt"
    )
    assert read_checkpoint(last)["global_step"] == 6


def test_outer_steps_are_the_run_clock(tmp_path: Path, tiny_plugins: str) -> None:
    """With 3 optimizer steps per outer step, max_steps, the checkpoint cadence and resume
    count outer steps, and stop-and-resume equals an uninterrupted run."""
    steps = ["meta_optimizer.name=tiny_plugins:ThreeStepsPerOuterStep", "trainer.max_steps=8"]
    cadence = "trainer.checkpoint_every_n_steps=4"
    whole = train_recipe(tiny_recipe(*steps, cadence), tmp_path / "whole")
    last = read_checkpoint(whole / "checkpoints" / "last.ckpt")
    assert last["outer_step"] == 8 and last["global_step"] == 24
    periodic = sorted(p.name for p in (whole / "checkpoints").glob("step=*.ckpt"))
    assert periodic == ["step=000004.ckpt", "step=000008.ckpt"]
    part = train_recipe(tiny_recipe(*steps[:1], "trainer.max_steps=5", cadence), tmp_path / "part")
    assert read_checkpoint(part / "checkpoints" / "last.ckpt")["outer_step"] == 5
    resume_run(part, ["trainer.max_steps=8"])
    assert_same_state(agent_state(whole), agent_state(part))


def test_periodic_checkpoints_kept_across_resumes(tmp_path: Path) -> None:
    """Only the two newest periodic checkpoints remain, however often the run resumed."""
    run_dir = train_recipe(tiny_recipe("trainer.max_steps=4"), tmp_path / "run")
    resume_run(run_dir, ["trainer.max_steps=8"])
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step=000006.ckpt", "step=000008.ckpt"]


def test_non_finite_loss_stops_with_a_clear_error(tmp_path: Path, tiny_plugins: str) -> None:
    """A meta-optimizer whose loss turns NaN stops the run with NonFiniteError; checkpoints stay."""
    recipe = tiny_recipe("meta_optimizer.name=tiny_plugins:NaNAfterTwoSteps", "trainer.max_steps=6")
    with pytest.raises(NonFiniteError, match="diverged"):
        train_recipe(recipe, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "step=000002.ckpt").is_file()


def test_wandb_logs_offline_without_network_or_account(tmp_path: Path) -> None:
    """The default W&B mode writes an offline run under the run directory."""
    env_mode = os.environ.pop("WANDB_MODE", None)
    try:
        recipe = tiny_recipe("trainer.max_steps=2", "logger.wandb.mode=offline")
        run_dir = train_recipe(recipe, tmp_path / "run")
    finally:
        if env_mode is not None:
            os.environ["WANDB_MODE"] = env_mode
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run was written"


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    """With DDP on 2 CPU processes, ranks train on different tasks and stay in sync."""
    run_dir = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(HELPERS))
    subprocess.run(
        [sys.executable, str(HELPERS / "ddp_check.py"), str(HARLOW), str(run_dir)],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    ranks = [json.loads((run_dir / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert len(ranks[0]["tasks"]) == 3
    assert all(a != b for a, b in zip(ranks[0]["tasks"], ranks[1]["tasks"], strict=True))
    assert ranks[0]["parameters"] == ranks[1]["parameters"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_compiled_plastic_update_trains(tmp_path: Path) -> None:
    """trainer.compile=true trains through torch.compile'd rule steps and checkpoints."""
    run_dir = train_recipe(
        tiny_recipe("trainer.max_steps=2", "trainer.compile=true"), tmp_path / "run"
    )
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2
