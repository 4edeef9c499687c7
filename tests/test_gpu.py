"""Training, resume and evaluation on CUDA for the torch-native tasks (skipped without a GPU).

Run on a GPU machine with ``pytest -m gpu``. Tiny budgets: these check that every tensor lives
on the device and that a run round-trips through its checkpoint, not how well it learns.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from run_if import run_if

from metods_core.components import create_agent, create_task_sampler
from metods_core.evaluation import evaluate_run
from metods_core.recipe import load_recipe
from metods_core.rollout import run_lifetimes
from metods_core.training import resume_run, train_recipe
from metods_core.training.checkpoints import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"harlow": ROOT / "recipes/harlow/metods.yaml", "maze": ROOT / "recipes/maze/metods.yaml"}
TINY = [
    "data.batch_tasks=8",
    "trainer.accelerator=gpu",
    "trainer.devices=1",
    "trainer.compile=false",
    "trainer.checkpoint_every_n_steps=1",
    "trainer.log_every_n_steps=1",
    "logger.wandb.mode=disabled",
    "evaluation.batch_tasks=8",
]


def _step(run_dir: Path) -> int:
    return int(read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"])


@run_if(min_cuda_gpus=1)
@pytest.mark.parametrize("task", sorted(RECIPES))
def test_train_resume_and_evaluate_on_cuda(task: str, tmp_path: Path) -> None:
    """Two outer steps on the GPU, a resume to four, and a meta-test with the agent on the GPU."""
    recipe = load_recipe(RECIPES[task], [*TINY, "trainer.max_steps=2"])
    run_dir = train_recipe(recipe, tmp_path / task)
    assert _step(run_dir) == 2
    first = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    resume_run(run_dir, ["trainer.max_steps=4"])
    assert _step(run_dir) == 4
    second = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.isfinite(tensor).all() for tensor in second.values())
    assert any(not torch.equal(first[name].cpu(), second[name].cpu()) for name in first)
    summary = evaluate_run(run_dir, episodes=16, device="cuda")
    assert summary["episodes"] == 16 and math.isfinite(summary["mean_reward"])


@run_if(min_cuda_gpus=1)
@pytest.mark.parametrize("task", sorted(RECIPES))
def test_compiled_training_on_cuda(task: str, tmp_path: Path) -> None:
    """trainer.compile=true (torch.compile of the plastic update) trains on the GPU."""
    recipe = load_recipe(RECIPES[task], [*TINY, "trainer.max_steps=2", "trainer.compile=true"])
    assert _step(train_recipe(recipe, tmp_path / task)) == 2


@run_if(min_cuda_gpus=1)
@pytest.mark.parametrize("task", sorted(RECIPES))
def test_rollout_makes_no_host_sync_per_env_step(task: str) -> None:
    """A whole lifetime on the GPU runs without one host-device synchronisation (DESIGN §7):
    CUDA's sync debug mode turns any into an error."""
    recipe = load_recipe(RECIPES[task], TINY)
    sampler = create_task_sampler(recipe)
    agent = create_agent(recipe, sampler).to("cuda")
    tasks = sampler.sample(8, "train", torch.Generator().manual_seed(0))
    from lightning.pytorch.utilities import move_data_to_device

    env = sampler.make_env(move_data_to_device(tasks, "cuda"))
    generator = torch.Generator(device="cuda").manual_seed(1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_lifetimes(agent, env, generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@run_if(bf16_cuda=True)
def test_bf16_mixed_precision_trains_on_cuda(tmp_path: Path) -> None:
    """trainer.precision=bf16-mixed trains Harlow and keeps the meta-parameters finite."""
    overrides = [*TINY, "trainer.max_steps=2", "trainer.precision=bf16-mixed"]
    run_dir = train_recipe(load_recipe(RECIPES["harlow"], overrides), tmp_path / "bf16")
    state = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert _step(run_dir) == 2 and all(torch.isfinite(t).all() for t in state.values())
