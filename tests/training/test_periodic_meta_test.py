"""The meta-test during training (``evaluation.every_n_steps``): the logged test curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from metods_core.evaluation import evaluate_run
from metods_core.recipe import RecipeError, load_recipe
from metods_core.training import resume_run, train_recipe
from metods_core.training.checkpoints import read_checkpoint
from metods_core.training_log import read_training_logs

ROOT = Path(__file__).resolve().parents[2]
HARLOW = ROOT / "recipes" / "harlow" / "metods.yaml"
TINY = [
    "data.batch_tasks=4",
    "plasticity.recursion_steps=1",
    "trainer.max_steps=4",
    "trainer.log_every_n_steps=1",
    "logger.wandb.mode=disabled",
    "trainer.compile=false",
    "evaluation.batch_tasks=8",
]
PERIODIC = ["evaluation.every_n_steps=2", "evaluation.periodic_episodes=8"]


def _same(a: Any, b: Any) -> bool:
    """Whether two checkpoint entries (dicts, lists, arrays, tensors, numbers) are equal."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor | np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a == b)


def _train(run_dir: Path, overrides: list[str]) -> Path:
    return train_recipe(load_recipe(HARLOW, TINY + overrides), run_dir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same 4 outer steps twice: with a meta-test every 2 steps, and without."""
    root = tmp_path_factory.mktemp("periodic")
    return _train(root / "with", PERIODIC), _train(root / "without", [])


def test_the_test_curve_is_logged_at_its_steps_and_equals_metods_evaluate(
    runs: tuple[Path, Path],
) -> None:
    """``test/<key>`` appears at outer steps 2 and 4 only (CSV steps 1 and 3, beside the train
    metrics of the same steps), for every per-task metric; the last value is what ``metods
    evaluate --episodes 8`` measures on the last checkpoint."""
    with_test, without = runs
    logs = read_training_logs(with_test)
    test_columns = sorted(c for c in logs if c.startswith("test/"))
    assert test_columns == [
        "test/accuracy_first", "test/accuracy_later", "test/mean_reward", "test/presentations"
    ]  # fmt: skip
    assert [step for step, _ in logs["test/mean_reward"]] == [1, 3]
    assert [step for step, _ in logs["train/episode_reward"]] == [0, 1, 2, 3]
    assert not [c for c in read_training_logs(without) if c.startswith("test/")]
    summary = evaluate_run(with_test, episodes=8)
    for column in test_columns:
        key = column.removeprefix("test/")
        assert logs[column][-1][1] == pytest.approx(summary[key], rel=1e-6, abs=1e-9)


CHEETAH = ROOT / "recipes" / "mujoco" / "cheetah_dir_metods.yaml"


@pytest.fixture(scope="module")
def cheetah_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """cheetah_dir with normalised observations, 4 outer steps with and without a meta-test
    every 2: the sampler's running statistics must not be frozen or moved by it."""
    pytest.importorskip("mujoco")
    root = tmp_path_factory.mktemp("periodic_cheetah")
    tiny = [
        "task.episode_steps=10",
        "data.batch_tasks=2",
        "agent.hidden=8",
        "trainer.max_steps=4",
        "trainer.log_every_n_steps=1",
        "logger.wandb.mode=disabled",
        "trainer.compile=false",
        "evaluation.batch_tasks=4",
    ]
    return tuple(  # type: ignore[return-value]
        train_recipe(load_recipe(CHEETAH, tiny + extra), root / name)
        for name, extra in (
            ("with", [*PERIODIC[:1], "evaluation.periodic_episodes=4"]),
            ("without", []),
        )
    )


@pytest.mark.parametrize("family", ["harlow", "cheetah_dir"])
def test_the_meta_test_leaves_training_unchanged(
    family: str, request: pytest.FixtureRequest
) -> None:
    """Meta-parameters, training metrics and the task sampler's saved state (cheetah_dir's
    observation statistics) are the same to the bit with and without it: its lifetimes draw
    from their own generators and run on a sampler of their own."""
    runs = request.getfixturevalue("runs" if family == "harlow" else "cheetah_runs")
    with_test, without = runs
    assert [c for c in read_training_logs(with_test) if c.startswith("test/")]
    trained = [read_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"] for run in runs]
    assert trained[0].keys() == trained[1].keys()
    for name in trained[0]:
        assert torch.equal(trained[0][name], trained[1][name]), name
    states = [read_checkpoint(run / "checkpoints" / "last.ckpt")["callbacks"] for run in runs]
    assert _same(states[0], states[1])
    assert (
        read_training_logs(with_test)["train/episode_reward"]
        == read_training_logs(without)["train/episode_reward"]
    )


def test_a_resume_can_turn_it_on(tmp_path: Path) -> None:
    """``evaluation.every_n_steps`` may be set when resuming a run that trained without it."""
    run = train_recipe(
        load_recipe(HARLOW, [*TINY, "trainer.max_steps=2", "trainer.checkpoint_every_n_steps=1"]),
        tmp_path / "run",
    )
    resume_run(run, ["trainer.max_steps=4", *PERIODIC])
    assert [step for step, _ in read_training_logs(run)["test/mean_reward"]] == [3]


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_non_positive_period_is_refused(value: str) -> None:
    """``every_n_steps`` and ``periodic_episodes`` must be positive."""
    for field in ("every_n_steps", "periodic_episodes"):
        with pytest.raises(RecipeError, match=field):
            load_recipe(HARLOW, [f"evaluation.{field}={value}"])
