"""Every shipped recipe validates and trains a few outer steps on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from metods_core.ablation import is_ablation_file
from metods_core.recipe import load_recipe
from metods_core.training import train_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if not is_ablation_file(p))
TINY = [
    "data.batch_tasks=2",
    "trainer.max_steps=2",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.strategy=auto",
    "trainer.compile=false",
    "logger.wandb.mode=disabled",
]
# Families whose shipped lifetimes are too long for a smoke test (Meta-World: 10 x 500 steps)
# also shorten the lifetime, by the folder's name.
TINY_LIFETIME = {"metaworld": ["task.rollout_steps=5", "task.rollouts=2"]}


def recipe_id(path: Path) -> str:
    return str(path.relative_to(ROOT / "recipes"))


def test_recipes_are_shipped() -> None:
    """The recipes folder is not empty (a glob that finds nothing would test nothing)."""
    assert RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=recipe_id)
def test_recipe_validates(path: Path) -> None:
    """The recipe loads and validates as shipped."""
    load_recipe(path)


@pytest.mark.parametrize("path", RECIPES, ids=recipe_id)
def test_recipe_trains_two_steps(path: Path, tmp_path: Path) -> None:
    """Two outer steps on two tasks run through the real Trainer and leave a checkpoint."""
    overrides = TINY + TINY_LIFETIME.get(path.parent.name, [])
    run_dir = train_recipe(load_recipe(path, overrides), tmp_path / "run")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
