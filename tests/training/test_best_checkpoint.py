"""trainer.keep_best: best.ckpt holds the best window mean of a training metric (the task's main
metric, or trainer.best_metric), survives a resume, and `metods evaluate RUN --checkpoint best`
evaluates it."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from best_checkpoint_state import best_state, set_saved_best_score

from metods_core.cli import main
from metods_core.recipe import RecipeError, load_recipe
from metods_core.run_folder import RunFolder
from metods_core.training import resume_run, train_recipe
from metods_core.training.checkpoints import checkpoint_outer_step, read_checkpoint

HARLOW = Path(__file__).resolve().parents[2] / "recipes" / "harlow" / "metods.yaml"
TINY = [
    "data.batch_tasks=4",
    "plasticity.recursion_steps=1",
    "trainer.compile=false",
    "logger.wandb.mode=disabled",
    "trainer.num_threads=1",
    "trainer.log_every_n_steps=1",
    "trainer.checkpoint_every_n_steps=3",
    "trainer.keep_best=true",
    "trainer.best_window=2",
]


def logged_returns(run: Path, column: str = "train/episode_reward") -> list[float]:
    """A training metric of every outer step (Harlow's main metric, the return, by default),
    from the run's CSV logs, in order."""
    values = []
    for path in RunFolder(run).metrics_csvs():
        with path.open() as file:
            values += [float(r[column]) for r in csv.DictReader(file) if r[column]]
    return values


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run of 6 outer steps (3 windows of 2) that keeps its best checkpoint."""
    run = tmp_path_factory.mktemp("best") / "run"
    train_recipe(load_recipe(HARLOW, [*TINY, "trainer.max_steps=6"]), run)
    return run


def test_best_checkpoint_is_the_best_window_mean(trained: Path) -> None:
    """best.ckpt was saved at the end of the window whose mean logged return is the highest."""
    returns = logged_returns(trained)
    assert len(returns) == 6
    means = [sum(returns[i : i + 2]) / 2 for i in (0, 2, 4)]
    winner = max(range(3), key=lambda i: (means[i], -i))  # the first of equal means
    best = RunFolder(trained).best_checkpoint
    assert checkpoint_outer_step(read_checkpoint(best)) == 2 * (winner + 1)
    state = best_state(RunFolder(trained).last_checkpoint)
    assert state["best"] == pytest.approx(means[winner], rel=1e-5)
    assert state["best_step"] == 2 * (winner + 1)


def test_best_metric_chooses_what_best_ckpt_maximises(tmp_path: Path) -> None:
    """With trainer.best_metric=entropy, best.ckpt is at the window of the highest mean
    entropy, and the checkpoints name the metric they compared."""
    run = tmp_path / "run"
    overrides = [*TINY, "trainer.max_steps=6", "trainer.best_metric=entropy"]
    train_recipe(load_recipe(HARLOW, overrides), run)
    entropies = logged_returns(run, "train/entropy")
    means = [sum(entropies[i : i + 2]) / 2 for i in (0, 2, 4)]
    winner = max(range(3), key=lambda i: (means[i], -i))
    state = best_state(RunFolder(run).best_checkpoint)
    assert state["metric"] == "entropy"
    assert state["best_step"] == 2 * (winner + 1)
    assert state["best"] == pytest.approx(means[winner], rel=1e-5)


def test_a_resume_that_changes_the_metric_starts_a_new_comparison(
    trained: Path, tmp_path: Path
) -> None:
    """The return's best score is not compared with entropies: after a resume with
    best_metric=entropy, the next window's entropy is the best, whatever the return was."""
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    resume_run(run, ["trainer.max_steps=8", "trainer.best_metric=entropy"])
    entropies = logged_returns(run, "train/entropy")
    state = best_state(RunFolder(run).best_checkpoint)
    assert (state["metric"], state["best_step"]) == ("entropy", 8)
    assert state["best"] == pytest.approx(sum(entropies[6:8]) / 2, rel=1e-5)


@pytest.mark.parametrize("name", ["train/success", "test/success"])
def test_best_metric_is_a_training_metric_s_bare_name(name: str) -> None:
    """A prefixed name or a held-out metric is a recipe error naming the field."""
    with pytest.raises(RecipeError, match="best_metric"):
        load_recipe(HARLOW, [f"trainer.best_metric={name}"])


def test_a_metric_the_run_does_not_log_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """keep_best on a metric nobody logs: exit 2, and the message lists the logged ones."""
    overrides = [*TINY, "trainer.max_steps=2", "trainer.best_metric=sucess"]
    assert main(["train", str(HARLOW), *overrides, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "train/sucess" in err and "episode_reward" in err and "Traceback" not in err


def test_best_score_survives_a_resume(trained: Path, tmp_path: Path) -> None:
    """A resumed run compares with the best score saved in the checkpoint: with a score no
    window can reach, best.ckpt is not replaced and the score is still there at the end."""
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    folder = RunFolder(run)
    set_saved_best_score(folder, 1e9)
    before = folder.best_checkpoint.read_bytes()
    resume_run(run, ["trainer.max_steps=8"])
    assert len(logged_returns(run)) == 8
    assert folder.best_checkpoint.read_bytes() == before
    assert best_state(folder.last_checkpoint)["best"] == 1e9


def test_partial_window_is_carried_over_a_resume(tmp_path: Path) -> None:
    """A run stopped inside a window finishes that window after the resume (3 + 1 steps with a
    window of 4 give one window whose mean is over all four logged returns)."""
    run = tmp_path / "run"
    overrides = [*TINY, "trainer.max_steps=3", "trainer.best_window=4"]
    train_recipe(load_recipe(HARLOW, overrides), run)
    assert not RunFolder(run).best_checkpoint.exists()
    resume_run(run, ["trainer.max_steps=4"])
    returns = logged_returns(run)
    state = best_state(RunFolder(run).best_checkpoint)
    assert state["best"] == pytest.approx(sum(returns) / 4, rel=1e-5)
    assert state["best_step"] == 4


def test_evaluate_best(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--checkpoint best` evaluates best.ckpt and writes evaluation-best.json."""
    code = main(["evaluate", str(trained), "--checkpoint", "best", "--episodes", "4", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(RunFolder(trained).evaluation("-best").read_text())
    assert printed["mean_reward"] == written["mean_reward"]


def test_evaluate_best_without_it_is_one_clear_error(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run trained without keep_best has no best.ckpt: exit 2 and the advice to resume."""
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    RunFolder(run).best_checkpoint.unlink()
    assert main(["evaluate", str(run), "--checkpoint", "best", "--episodes", "4"]) == 2
    assert "trainer.keep_best=true" in capsys.readouterr().err
