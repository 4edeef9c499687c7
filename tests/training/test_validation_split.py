"""A validation split: its periodic meta-test (``validation/<key>``), ``best.ckpt`` ranked by it
(``trainer.best_metric: validation/<key>``), ``metods evaluate --split validation``, and the
clear errors of a recipe that asks for one it cannot have."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from best_checkpoint_state import best_state, set_saved_best_score

from metods_core.cli import main
from metods_core.evaluation import evaluate_run
from metods_core.recipe import RecipeError, load_recipe
from metods_core.run_folder import RunFolder
from metods_core.testing import check_task_sampler
from metods_core.testing.fakes import FakeTasks
from metods_core.training import resume_run, train_recipe
from metods_core.training.checkpoints import checkpoint_outer_step, read_checkpoint
from metods_core.training_log import read_training_logs

FAKES = "metods_core.testing.fakes"
RECIPE: dict[str, Any] = {
    "seed": 3,
    "task": {"name": f"{FAKES}:FakeTasks", "validation": True},
    "agent": {"hidden": 6},
    "plasticity": {"name": f"{FAKES}:FakeRule"},
    "readout": {"name": f"{FAKES}:FakeReadout"},
    "meta_optimizer": {"name": "a2c", "lr": 0.05},
    "data": {"batch_tasks": 4},
    "trainer": {
        "max_steps": 6,
        "num_threads": 1,
        "log_every_n_steps": 1,
        "checkpoint_every_n_steps": 2,
        "keep_best": True,
        "best_metric": "validation/mean_reward",
    },
    "logger": {"wandb": {"mode": "disabled"}, "csv": True},
    "evaluation": {
        "every_n_steps": 2,
        "periodic_episodes": 8,
        "validation_episodes": 12,
        "batch_tasks": 8,
    },
}


def write_recipe(folder: Path, **sections: dict[str, Any]) -> Path:
    """Write ``RECIPE`` with ``sections`` merged into its sections; return the file."""
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in RECIPE.items()}
    for section, changes in sections.items():
        data[section].update(changes)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 outer steps that meta-test the validation and test splits at steps 2, 4 and 6 and
    keep the checkpoint of the best validation return."""
    folder = tmp_path_factory.mktemp("validation")
    return train_recipe(load_recipe(write_recipe(folder)), folder / "run")


def test_fake_tasks_with_a_validation_split_conform() -> None:
    """The conformance suite draws the third split too: three pairwise different splits."""
    check_task_sampler(FakeTasks, validation=True)


def test_the_validation_curve_is_logged_beside_the_test_curve(run: Path) -> None:
    """``validation/<key>`` and ``test/<key>`` at outer steps 2, 4 and 6 (CSV steps 1, 3, 5),
    different numbers (different tasks); the last validation value is what ``metods evaluate
    --split validation`` measures on the last checkpoint with the same lifetimes."""
    logs = read_training_logs(run)
    assert [step for step, _ in logs["validation/mean_reward"]] == [1, 3, 5]
    assert [step for step, _ in logs["test/mean_reward"]] == [1, 3, 5]
    assert logs["validation/mean_reward"] != logs["test/mean_reward"]
    summary = evaluate_run(run, episodes=12, split="validation")
    assert summary["split"] == "validation"
    assert logs["validation/mean_reward"][-1][1] == pytest.approx(summary["mean_reward"], rel=1e-6)
    assert RunFolder(run).evaluation("-validation").is_file()


def test_best_checkpoint_is_the_best_validation_score(run: Path) -> None:
    """best.ckpt is the outer step of the highest validation return (the first of equals), and
    the checkpoints saved at a validation step already hold the score of that step."""
    scores = [value for _, value in read_training_logs(run)["validation/mean_reward"]]
    assert len(set(scores)) == 3  # a real ranking: the three scores differ
    winner = max(range(3), key=lambda i: (scores[i], -i))
    folder = RunFolder(run)
    assert checkpoint_outer_step(read_checkpoint(folder.best_checkpoint)) == 2 * (winner + 1)
    state = best_state(folder.last_checkpoint)
    assert state["metric"] == "validation/mean_reward"
    assert state["best"] == pytest.approx(max(scores), rel=1e-6)
    assert state["best_step"] == 2 * (winner + 1)


def test_a_resume_keeps_ranking_by_validation(run: Path, tmp_path: Path) -> None:
    """Resumed with a score no validation can reach, best.ckpt is left alone and the next
    validation steps are still meta-tested and logged."""
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    folder = RunFolder(copy)
    set_saved_best_score(folder, 1e9)
    before = folder.best_checkpoint.read_bytes()
    resume_run(copy, ["trainer.max_steps=8"])
    assert [step for step, _ in read_training_logs(copy)["validation/mean_reward"]][-1] == 7
    assert folder.best_checkpoint.read_bytes() == before


def test_the_validation_split_has_its_own_cadence(tmp_path: Path) -> None:
    """``validation_every_n_steps: 1`` with ``every_n_steps: 4``: validation at every outer
    step, the test split at step 4 only, and best.ckpt at the best of the four validation
    steps, also those that save no periodic checkpoint; without ``every_n_steps`` the
    validation meta-test still runs, and nothing is logged under ``test/``."""
    steps = {"max_steps": 4}
    recipe = write_recipe(
        tmp_path, trainer=steps, evaluation={"every_n_steps": 4, "validation_every_n_steps": 1}
    )
    run = train_recipe(load_recipe(recipe), tmp_path / "run")
    logs = read_training_logs(run)
    assert [step for step, _ in logs["validation/mean_reward"]] == [0, 1, 2, 3]
    assert [step for step, _ in logs["test/mean_reward"]] == [3]
    scores = [value for _, value in logs["validation/mean_reward"]]
    winner = max(range(4), key=lambda i: (scores[i], -i))
    best = read_checkpoint(RunFolder(run).best_checkpoint)
    assert checkpoint_outer_step(best) == winner + 1
    alone = write_recipe(
        tmp_path, trainer=steps, evaluation={"every_n_steps": None, "validation_every_n_steps": 2}
    )
    logs = read_training_logs(train_recipe(load_recipe(alone), tmp_path / "alone"))
    assert [step for step, _ in logs["validation/mean_reward"]] == [1, 3]
    assert not any(column.startswith("test/") for column in logs)


@pytest.mark.parametrize(
    ("sections", "advice"),
    [
        ({"evaluation": {"every_n_steps": None}}, "evaluation.validation_every_n_steps"),
        ({"task": {"validation": False}}, "no validation split"),
        ({"trainer": {"best_metric": "validation/sucess"}}, "validation/mean_reward"),
    ],
)
def test_a_validation_metric_the_run_cannot_have_is_one_clear_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sections: dict[str, dict[str, Any]],
    advice: str,
) -> None:
    """No periodic meta-test, no validation split, or a misspelt metric: exit 2, no traceback,
    and the message says what to set."""
    recipe = write_recipe(tmp_path, **sections)
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert advice in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["validation/", "validation"])
def test_a_validation_metric_needs_a_name(tmp_path: Path, name: str) -> None:
    """The prefix alone is a recipe error naming the field."""
    with pytest.raises(RecipeError, match="best_metric"):
        load_recipe(write_recipe(tmp_path), [f"trainer.best_metric={name}"])


def test_evaluate_a_validation_split_the_task_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--split validation`` on a run whose task has none: exit 2 and what would have one."""
    recipe = write_recipe(
        tmp_path,
        task={"validation": False},
        trainer={"max_steps": 1, "keep_best": False},
        evaluation={"every_n_steps": None},
    )
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    code = main(["evaluate", str(tmp_path / "run"), "--split", "validation", "--episodes", "2"])
    assert code == 2
    assert "task.validation_tasks" in capsys.readouterr().err


@pytest.mark.slow
def test_ranks_agree_on_the_best_validation_step_under_ddp(tmp_path: Path) -> None:
    """With DDP on 2 CPU processes only rank 0 meta-tests, and its score decides on both ranks
    (saving best.ckpt is collective: a disagreement would hang): the run ends, and best.ckpt is
    the step of the highest logged validation return."""
    recipe = write_recipe(tmp_path, trainer={"devices": 2, "strategy": "ddp", "max_steps": 4})
    run = tmp_path / "run"
    command = [sys.executable, "-m", "metods_core.cli", "train", str(recipe), "--run-dir", str(run)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    scores = [value for _, value in read_training_logs(run)["validation/mean_reward"]]
    assert len(scores) == 2
    winner = max(range(2), key=lambda i: (scores[i], -i))
    folder = RunFolder(run)
    assert checkpoint_outer_step(read_checkpoint(folder.best_checkpoint)) == 2 * (winner + 1)
    state = best_state(folder.last_checkpoint)
    assert state["best"] == pytest.approx(max(scores), rel=1e-6)
