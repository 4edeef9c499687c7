"""The run folder has one owner, and evaluation builds only the sampler and the agent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import metods_core.training.module
from metods_core import components
from metods_core.evaluation import condition_sampler, evaluate_run
from metods_core.recipe import RecipeError, load_recipe
from metods_core.run_folder import RunFolder, metric_key
from metods_core.training import train_recipe

ROOT = Path(__file__).resolve().parents[1]
MAZE = ROOT / "recipes" / "maze" / "metods.yaml"
NAMES = re.compile(
    r"checkpoints/|evaluation.json|train.log|[\"'](recipe\.yaml|resumes\.yaml|versions\.json"
    r"|checkpoints|last\.ckpt|logs|metrics\.csv|wandb_id\.txt|training_curve\.png)[\"']"
    r"|\.status\.json|\.log\""
)


def test_only_the_run_folder_module_names_the_run_folders_files() -> None:
    """No module of metods_core but run_folder.py spells a file name of the run folder."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "metods_core").rglob("*.py"))
        if path.name != "run_folder.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if NAMES.search(line)
    ]
    assert not found, "\n".join(found)


def test_paths_of_a_run_and_of_an_ablation_run(tmp_path: Path) -> None:
    """Files inside the folder; an ablation's log, status and lock beside it."""
    run = RunFolder(tmp_path / "runs" / "a=1-seed0")
    assert run.periodic_checkpoint(7).name == "step=000007.ckpt"
    assert run.evaluation("-task.x=1").name == "evaluation-task.x=1.json"
    assert run.log == tmp_path / "runs" / "a=1-seed0.log"
    assert run.lock.parent == run.status.parent == run.path.parent
    assert metric_key("episode_reward") == "mean_reward" and metric_key("success") == "success"
    assert not run.is_run()


def test_evaluation_builds_no_training_module_nor_meta_optimizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """evaluate_run loads the agent's weights into a fresh agent; the meta-optimizer and the
    Lightning module are never built. Maze's extra condition (maze10) is evaluated too."""
    tiny = ["data.batch_tasks=2", "trainer.max_steps=1", "trainer.compile=false"]
    tiny += ["logger.wandb.mode=disabled", "evaluation.batch_tasks=2", "trainer.num_threads=1"]
    run_dir = train_recipe(load_recipe(MAZE, tiny), tmp_path / "run")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("evaluation built a training-only part")

    monkeypatch.setattr(components, "create_meta_optimizer", refuse)
    monkeypatch.setattr(metods_core.training.module.MetaLearningModule, "__init__", refuse)
    summary = evaluate_run(run_dir, episodes=2)
    written = json.loads(RunFolder(run_dir).evaluation().read_text())
    assert written["mean_reward_n"] == 2 and "maze10/mean_reward" in written
    assert summary["main_metric"] == "episode_reward"


def test_an_evaluation_condition_is_validated() -> None:
    """A condition's values go through the task's Config: a bad one is a recipe error."""
    recipe = load_recipe(MAZE)
    assert condition_sampler(recipe, "maze10", {"size": 10}).config.size == 10
    with pytest.raises(RecipeError, match="task.size"):
        condition_sampler(recipe, "broken", {"size": -3})
