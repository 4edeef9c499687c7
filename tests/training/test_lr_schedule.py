"""trainer.lr_schedule: the meta-optimizer's rate over the budget, through the real Trainer."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from metods_core.recipe import load_recipe
from metods_core.recipe.schema import TrainerConfig
from metods_core.training import resume_run, train_recipe
from metods_core.training.checkpoints import read_checkpoint
from metods_core.training.lr_schedule import apply_learning_rates, learning_rate_factor

ROOT = Path(__file__).resolve().parents[2]
HARLOW = ROOT / "recipes" / "harlow" / "metods.yaml"
TINY = [
    "data.batch_tasks=4",
    "plasticity.recursion_steps=2",  # two parameter groups: the deep coefficients at lr / 2
    "trainer.accelerator=cpu",
    "trainer.checkpoint_every_n_steps=2",
    "trainer.log_every_n_steps=1",
    "logger.wandb.mode=disabled",
    "trainer.compile=false",
    "trainer.max_steps=4",
    "meta_optimizer.lr=0.002",
    "trainer.lr_schedule=linear",
    "trainer.final_lr_fraction=0.5",
]


def test_factor_constant_and_linear() -> None:
    """Constant is 1; linear goes from 1 at step 0 to final_lr_fraction at max_steps, then stays."""
    assert learning_rate_factor(TrainerConfig(max_steps=10), 7) == 1.0
    linear = TrainerConfig(max_steps=10, lr_schedule="linear", final_lr_fraction=0.2)
    factors = [learning_rate_factor(linear, step) for step in (0, 5, 10, 12)]
    assert factors == pytest.approx([1.0, 0.6, 0.2, 0.2])


def test_apply_keeps_each_group_s_ratio() -> None:
    """Every group gets its own recipe rate times the factor; a group count mismatch is refused."""
    optimizer = torch.optim.Adam(
        [
            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0},
            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.25},
        ]
    )
    apply_learning_rates(optimizer, [1.0, 0.25], 0.5)
    assert [group["lr"] for group in optimizer.param_groups] == [0.5, 0.125]
    with pytest.raises(ValueError, match="parameter groups"):
        apply_learning_rates(optimizer, [1.0], 0.5)


def logged_rates(run_dir: Path) -> list[float]:
    rows = []
    for path in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        rows += [row for row in csv.DictReader(path.open()) if row.get("train/lr")]
    return [float(row["train/lr"]) for row in sorted(rows, key=lambda row: int(row["step"]))]


def test_linear_schedule_in_training_and_across_a_resume(tmp_path: Path) -> None:
    """The logged rate falls linearly, the optimizer's groups keep their ratio, and a run resumed
    from step 2 repeats the uninterrupted one bit for bit."""
    whole = train_recipe(load_recipe(HARLOW, TINY), tmp_path / "whole")
    assert logged_rates(whole) == pytest.approx([0.002, 0.00175, 0.0015, 0.00125])
    groups = read_checkpoint(whole / "checkpoints" / "last.ckpt")["optimizer_states"][0]
    assert sorted(group["lr"] for group in groups["param_groups"]) == pytest.approx(
        [0.000625, 0.00125]
    )
    part = tmp_path / "part"
    shutil.copytree(whole, part)
    resume_run(part, checkpoint=part / "checkpoints" / "step=000002.ckpt")
    first = read_checkpoint(whole / "checkpoints" / "last.ckpt")["state_dict"]
    second = read_checkpoint(part / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(first[name], second[name]) for name in first)
