"""task.normalize_observations: running statistics of training observations, frozen at
meta-test, saved in the checkpoints and restored by resume and evaluation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from metods_plugins.tasks.mujoco_normalizer import RunningObservationNormalizer
from metods_plugins.tasks.mujoco_tasks import CheetahDirTasks

from metods_core.components import create_task_sampler
from metods_core.evaluation import load_trained_agent, meta_test
from metods_core.recipe import load_recipe
from metods_core.run_folder import RunFolder
from metods_core.testing.tasks import check_frozen_statistics
from metods_core.training import resume_run, train_recipe
from metods_core.training.checkpoints import read_checkpoint

needs_mujoco = pytest.mark.skipif(
    importlib.util.find_spec("mujoco") is None, reason="needs the MuJoCo extra"
)
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mujoco" / "cheetah_dir_metods.yaml"
TINY = [
    "trainer.max_steps=2",
    "data.batch_tasks=2",
    "task.episode_steps=5",
    "task.normalize_observations=true",
    "trainer.compile=false",
    "trainer.num_threads=1",
    "trainer.checkpoint_every_n_steps=1",
    "logger.wandb.mode=disabled",
]


def test_running_statistics_match_numpy() -> None:
    """Batches merged one by one give the mean and variance of all rows; output is clipped."""
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 5.0, size=(n, 4)) for n in (1, 7, 16)]
    normalizer = RunningObservationNormalizer(4, clip=2.0)
    for batch in batches:
        normalizer.update(batch)
    rows = np.concatenate(batches)
    assert normalizer.count == 24
    np.testing.assert_allclose(normalizer.mean, rows.mean(axis=0))
    np.testing.assert_allclose(normalizer.var, rows.var(axis=0))
    out = normalizer(rows)
    expected = np.clip((rows - rows.mean(0)) / np.sqrt(rows.var(0) + 1e-8), -2.0, 2.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32 and np.abs(out).max() <= 2.0
    copy = RunningObservationNormalizer(4, clip=2.0)
    copy.load_state_dict(normalizer.state_dict())
    np.testing.assert_array_equal(copy(rows), out)
    assert copy.count == 24


@needs_mujoco
def test_training_lifetimes_update_and_meta_test_does_not() -> None:
    """Train-split envs update the statistics and normalise; test-split envs only normalise."""
    plain = CheetahDirTasks(CheetahDirTasks.Config(episode_steps=3))
    normed = CheetahDirTasks(CheetahDirTasks.Config(episode_steps=3, normalize_observations=True))
    generator = torch.Generator().manual_seed(0)
    tasks = plain.sample(2, "train", generator)
    raw_env, env = plain.make_env(tasks), normed.make_env(tasks)
    raw, _ = raw_env.reset()
    seen, _ = env.reset()
    assert normed.normalizer is not None and normed.normalizer.count == 2
    np.testing.assert_allclose(seen.numpy(), normed.normalizer(raw.numpy()), rtol=1e-6)
    action = torch.zeros(2, 6)
    for _ in range(3):
        raw = raw_env.step(action)[0]
        seen = env.step(action)[0]
    assert normed.normalizer.count == 8
    np.testing.assert_allclose(seen.numpy(), normed.normalizer(raw.numpy()), rtol=1e-6)
    test_env = normed.make_env(normed.sample(2, "test", generator))
    test_env.reset()
    test_env.step(action)
    assert normed.normalizer.count == 8
    for built in (raw_env, env, test_env):
        built.close()


@needs_mujoco
def test_the_statistics_freeze_on_the_train_split_too() -> None:
    """After ``freeze_statistics`` (meta-test), train-split lifetimes leave the statistics as
    they were (the conformance check, with the statistics on)."""
    check_frozen_statistics(CheetahDirTasks, episode_steps=3, normalize_observations=True)


@needs_mujoco
def test_statistics_are_saved_resumed_and_used_by_evaluation(tmp_path: Path) -> None:
    """2 steps x 2 tasks x 6 observations = 24 rows in the checkpoint, 36 after one more step
    on resume, and the evaluation's sampler starts from them and leaves them unchanged."""
    run = train_recipe(load_recipe(RECIPE, TINY), tmp_path / "run")
    folder = RunFolder(run)

    def saved_count() -> int:
        state = read_checkpoint(folder.last_checkpoint)["callbacks"]["TaskState"]
        return int(state["sampler"]["observations"]["count"])

    assert saved_count() == 24
    resume_run(run, ["trainer.max_steps=3"])
    assert saved_count() == 36
    recipe = load_recipe(RECIPE, TINY)
    sampler = create_task_sampler(recipe)
    agent = load_trained_agent(recipe, sampler, folder.last_checkpoint, run)
    assert sampler.normalizer.count == 36  # type: ignore[attr-defined]
    meta_test(agent, sampler, episodes=2, batch_tasks=2, greedy=False, seed=0)
    assert sampler.normalizer.count == 36  # type: ignore[attr-defined]
    meta_test(agent, sampler, episodes=2, batch_tasks=2, greedy=False, seed=0, split="train")
    assert sampler.normalizer.count == 36  # type: ignore[attr-defined]  # frozen on train too


def test_statistics_stop_at_max_count() -> None:
    """With ``max_count`` the batch that reaches it is merged whole, later ones not at all."""
    rng = np.random.default_rng(1)
    batches = [rng.normal(0.0, 1.0, size=(5, 3)) for _ in range(3)]
    normalizer = RunningObservationNormalizer(3, max_count=8)
    for batch in batches:
        normalizer.update(batch)
    rows = np.concatenate(batches[:2])
    assert normalizer.count == 10
    np.testing.assert_allclose(normalizer.mean, rows.mean(axis=0))
    np.testing.assert_allclose(normalizer.var, rows.var(axis=0))


@needs_mujoco
def test_statistics_steps_set_on_resume_stop_the_statistics(tmp_path: Path) -> None:
    """``task.statistics_steps`` may change on resume and takes effect: resumed with a limit
    the run's 24 observations already pass, the statistics stay those of the first 2 steps."""
    run = train_recipe(load_recipe(RECIPE, TINY), tmp_path / "run")
    folder = RunFolder(run)
    before = read_checkpoint(folder.last_checkpoint)["callbacks"]["TaskState"]
    resume_run(run, ["trainer.max_steps=4", "task.statistics_steps=20"])
    after = read_checkpoint(folder.last_checkpoint)["callbacks"]["TaskState"]
    assert after["sampler"]["observations"]["count"] == 24
    assert after == before
    sampler = CheetahDirTasks(
        CheetahDirTasks.Config(normalize_observations=True, statistics_steps=20)
    )
    assert sampler.normalizer is not None and sampler.normalizer.max_count == 20
