"""Meta-World end to end: the conformance suite on both samplers, ML10's class split, and
training each sampler through the real trainer, then meta-testing it."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from metods_plugins.tasks.metaworld_tasks import MetaWorldML1Tasks, MetaWorldML10Tasks

from metods_core.testing import check_task_sampler
from metods_core.testing.tasks import check_frozen_statistics

ROOT = Path(__file__).resolve().parents[2]
TINY = {"rollout_steps": 10, "rollouts": 2}
needs_metaworld = pytest.mark.skipif(
    importlib.util.find_spec("metaworld") is None,
    reason='needs the Meta-World extra: pip install "metods-plugins[metaworld]"',
)


@needs_metaworld
@pytest.mark.slow
def test_ml1_conformance() -> None:
    """ML1 passes the task-sampler conformance suite with two short rollouts per lifetime."""
    check_task_sampler(MetaWorldML1Tasks, **TINY)


@needs_metaworld
@pytest.mark.slow
def test_ml1_observation_statistics_freeze_for_meta_test() -> None:
    """With ``normalize_observations``, train-split lifetimes stop updating the statistics once
    meta-test froze them (``metods evaluate --split train`` sees the checkpoint's)."""
    check_frozen_statistics(MetaWorldML1Tasks, normalize_observations=True, **TINY)


@needs_metaworld
@pytest.mark.slow
def test_ml10_conformance_and_class_split() -> None:
    """ML10 conforms; its train split draws only the 10 train classes and its test split only
    the 5 held-out classes, which no train task uses."""
    check_task_sampler(MetaWorldML10Tasks, **TINY)
    sampler = MetaWorldML10Tasks(MetaWorldML10Tasks.Config(**TINY))
    assert len(sampler.train_class_names) == 10 and len(sampler.test_class_names) == 5
    assert not set(sampler.train_class_names) & set(sampler.test_class_names)
    generator = torch.Generator().manual_seed(0)
    train = set(sampler.task_names(sampler.sample(200, "train", generator)))
    test = set(sampler.task_names(sampler.sample(100, "test", generator)))
    assert train == set(sampler.train_class_names) and test == set(sampler.test_class_names)


SHIPPED_REWARD = {
    "ml1_reach_metods.yaml": ("v1", 0.004),
    "ml10_metods.yaml": ("v2", 1.0),
}
"""Each trained recipe's reward version and scale (reach: v1, see docs/tasks.md)."""


def _benchmark(name: str) -> Any:
    """Import ``benchmarks/<name>.py`` (a script, not a package module)."""
    import importlib.util as util

    spec = util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train_tiny(recipe: str, tmp_path: Path, extra: list[str]) -> dict[str, Any]:
    from metods_core.evaluation import evaluate_run
    from metods_core.recipe import load_recipe
    from metods_core.training import train_recipe
    from metods_core.training.checkpoints import read_checkpoint
    from metods_core.training_log import read_training_logs

    overrides = [
        "task.rollout_steps=6",
        "task.rollouts=2",
        "data.batch_tasks=2",
        "trainer.max_steps=2",
        "trainer.accelerator=cpu",
        "logger.wandb.mode=disabled",
        "trainer.compile=false",
        "trainer.keep_best=true",
        "trainer.best_window=1",
        # the periodic meta-tests (test and validation splits) once, at the last step, small
        "evaluation.every_n_steps=2",
        "evaluation.validation_every_n_steps=2",
        "evaluation.periodic_episodes=2",
        "evaluation.validation_episodes=2",
        "evaluation.batch_tasks=2",
        *extra,
    ]
    run_dir = train_recipe(
        load_recipe(ROOT / "recipes" / "metaworld" / recipe, overrides), tmp_path
    )
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    written = (run_dir / "recipe.yaml").read_text()  # the reward is stated in the run
    version, scale = SHIPPED_REWARD[recipe]
    assert f"reward_function_version: {version}" in written
    assert f"reward_scale: {scale}" in written
    # best.ckpt ranks by the validation goals' success rate, never the held-out goals'
    best = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")["callbacks"]["BestCheckpoint"]
    assert best["metric"] == "validation/success" and 0.0 <= best["best"] <= 1.0
    logged = read_training_logs(run_dir)
    assert [step for step, _ in logged["validation/success"]] == [1]
    assert [step for step, _ in logged["test/success"]] == [1]
    return evaluate_run(run_dir, episodes=2, overrides=["evaluation.batch_tasks=2"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``tiny_run(recipe)``: the tiny run of ``recipe`` (hidden 8) and its meta-test summary,
    trained once per module (shared by the tests that only read it)."""
    runs: dict[str, dict[str, Any]] = {}

    def get(recipe: str) -> dict[str, Any]:
        if recipe not in runs:
            run = tmp_path_factory.mktemp("tiny") / "run"
            runs[recipe] = _train_tiny(recipe, run, ["agent.hidden=8"])
        return runs[recipe]

    return get


@needs_metaworld
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["ml1_reach_metods.yaml", "ml10_metods.yaml"])
def test_each_sampler_trains_and_meta_tests(recipe: str, tiny_run: Any) -> None:
    """Two outer steps through the real trainer, then a meta-test on held-out tasks that
    reports success per rollout, and for ML10 per task class: the held-out classes in the
    evaluation (their counts add up to the lifetimes), the train classes in the training log,
    beside those the periodic meta-tests of the validation and test splits met."""
    from metods_core.training_log import read_training_logs

    summary = tiny_run(recipe)
    assert summary["main_metric"] == "success"
    assert len(summary["success_by_rollout"]) == 2
    assert 0.0 <= summary["success"] <= 1.0 and math.isfinite(summary["mean_reward"])
    per_class = {key for key in summary if key.endswith("-v3")}
    logged = {c for c in read_training_logs(Path(summary["run_dir"])) if c.endswith("-v3")}
    if recipe == "ml1_reach_metods.yaml":
        assert not per_class and not logged  # one class: its success is ``success``
        return
    sampler = MetaWorldML10Tasks(MetaWorldML10Tasks.Config(**TINY))
    assert per_class == {f"success/{name}" for name in sampler.test_class_names}
    assert sum(summary[f"{key}_n"] for key in per_class) == 2
    trained = {c for c in logged if c.startswith("train/")}
    assert trained == {f"train/success/{name}" for name in sampler.train_class_names}
    # the periodic meta-tests log the classes they met: validation tasks are train classes'
    validated = {
        c.removeprefix("validation/success/") for c in logged if c.startswith("validation/")
    }
    tested = {c.removeprefix("test/success/") for c in logged if c.startswith("test/")}
    assert validated and validated <= set(sampler.train_class_names)
    assert tested and tested <= set(sampler.test_class_names)


@needs_metaworld
@pytest.mark.slow
def test_training_in_worker_processes_is_the_same_run(tmp_path: Path, tiny_run: Any) -> None:
    """``task.workers: 2`` through the real trainer (training, the periodic meta-tests, the
    evaluation) logs and meta-tests the same numbers as the simulators in the training process,
    and a resume may change the workers (they change no number)."""
    from metods_core.training import resume_run
    from metods_core.training_log import read_training_logs

    summary = tiny_run("ml1_reach_metods.yaml")  # the simulators in the training process
    in_process, in_workers = Path(summary["run_dir"]), tmp_path / "workers"
    extra = ["agent.hidden=8", "task.workers=2"]
    workers_summary = _train_tiny("ml1_reach_metods.yaml", in_workers, extra)
    paths = {"run_dir", "checkpoint", "plots"}
    assert {k: v for k, v in workers_summary.items() if k not in paths} == {
        k: v for k, v in summary.items() if k not in paths
    }
    logged, workers_logged = read_training_logs(in_process), read_training_logs(in_workers)
    for name in ("train/episode_reward", "train/success", "train/loss", "validation/success"):
        assert workers_logged[name] == logged[name], name
    resume_run(in_workers, ["trainer.max_steps=3", "task.workers=0"])
    assert [step for step, _ in read_training_logs(in_workers)["train/loss"]][-1] == 2


@needs_metaworld
@pytest.mark.slow
def test_throughput_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/metaworld_throughput.py measures raw, batched-env and collection rates, in
    this process and with worker processes."""
    import json

    module = _benchmark("metaworld_throughput")
    recipe = str(ROOT / "recipes" / "metaworld" / "ml1_reach_metods.yaml")
    for workers in ("0", "2"):
        argv = ["--batch", "2", "--steps", "5", "--recipe", recipe, "--workers", workers]
        assert module.main([*argv, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["batch"] == 2 and result["workers"] == int(workers)
        assert result["raw_steps_per_s"] > 0
        assert result["batched_env_steps_per_s"] > 0 and result["collect_steps_per_s"] > 0


@pytest.fixture(scope="module")
def tiny_reach_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny ML1 reach runs of 40-step rollouts, one per ``task.observation``."""
    runs = {}
    for observation in ("full", "robot"):
        run = tmp_path_factory.mktemp("reach") / observation
        extra = ["agent.hidden=8", f"task.observation={observation}", "task.rollout_steps=40"]
        _train_tiny("ml1_reach_metods.yaml", run, extra)
        runs[observation] = run
    return runs


@needs_metaworld
@pytest.mark.slow
def test_goal_probe_sees_the_puck_only_with_full_observations(
    tiny_reach_runs: dict[str, Path],
) -> None:
    """benchmarks/metaworld_goal_probe.py swaps the pucks of train goals: the hand's path moves
    for a policy that sees the objects (``task.observation=full``) and not at all (up to float
    rounding) for one that sees only the robot (``observation=robot``, which also trains end
    to end)."""
    module = _benchmark("metaworld_goal_probe")
    shifts = {}
    for observation, run in tiny_reach_runs.items():
        result = module.probe(run, 4)
        for condition in ("own puck", "another goal's puck"):
            assert set(result[condition]) == {"true goal k", "goal j", "other train goals"}
            assert all(0.0 <= value <= 1.0 for value in result[condition].values())
        shifts[observation] = result["path_shift"]
    # Metres: the robot-only policy's path differs by float rounding in the physics at most.
    assert shifts["full"] > 1e-4, shifts
    assert shifts["robot"] < 1e-9, shifts


@needs_metaworld
@pytest.mark.slow
def test_goal_map_agrees_with_metaworlds_success(tiny_reach_runs: dict[str, Path]) -> None:
    """benchmarks/metaworld_goal_map.py records one lifetime per held-out goal (the first 8):
    a goal counts a successful rollout exactly when the hand came within Meta-World's 5 cm of
    it, and the closest approach is never farther than the start; the summary's bins count
    every goal."""
    module = _benchmark("metaworld_goal_map")
    records = module.goal_map(tiny_reach_runs["robot"], "test", rollouts=2, goals=8)
    assert len(records) == 8
    for record in records:
        assert (record["success"] > 0) == (record["closest"] <= module.SUCCESS_RADIUS)
        assert record["closest"] <= record["start_distance"] + 1e-9
    summary = module.summarise(records)
    assert sum(row["goals"] for row in summary["by_start_distance"]) == 8
    missed = sum(record["success"] == 0 for record in records)
    assert sum(row["goals"] for row in summary["missed_by_closest_approach"]) == missed


@needs_metaworld
@pytest.mark.slow
def test_goal_map_with_another_checkpoint_s_statistics(
    tiny_reach_runs: dict[str, Path], tmp_path: Path
) -> None:
    """--statistics-from: the run's own checkpoint gives the same paths as without it; one
    whose statistics are shifted by 2 standard deviations moves the hand elsewhere."""
    import torch

    from metods_core.training.checkpoints import read_checkpoint

    module = _benchmark("metaworld_goal_map")
    run = tiny_reach_runs["robot"]
    own = run / "checkpoints" / "last.ckpt"
    shifted = read_checkpoint(own)
    statistics = shifted["callbacks"]["TaskState"]["sampler"]["observations"]
    statistics["mean"] = [
        m + 2 * v**0.5 for m, v in zip(statistics["mean"], statistics["var"], strict=True)
    ]
    torch.save(shifted, tmp_path / "shifted.ckpt")
    plain = module.goal_map(run, "test", rollouts=2, goals=4)
    same = module.goal_map(run, "test", rollouts=2, goals=4, statistics_from=own)
    moved = module.goal_map(
        run, "test", rollouts=2, goals=4, statistics_from=tmp_path / "shifted.ckpt"
    )
    assert [r["closest"] for r in same] == [r["closest"] for r in plain]
    assert [r["closest"] for r in moved] != [r["closest"] for r in plain]


@needs_metaworld
def test_initial_drift_shrinks_with_the_mean_heads_scale() -> None:
    """benchmarks/metaworld_initial_drift.py: the untrained reach policy of seed 0 pushes the
    hand one way in every lifetime; with ``readout.initial_mean_scale=0.01`` the shared
    displacement is several times smaller."""
    module = _benchmark("metaworld_initial_drift")
    recipe = ROOT / "recipes" / "metaworld" / "ml1_reach_metods.yaml"
    fast = ("task.rollout_steps=100", "trainer.compile=false")
    plain = module.initial_drift(recipe, 0, goals=3, overrides=fast)
    small = module.initial_drift(
        recipe, 0, goals=3, overrides=(*fast, "readout.initial_mean_scale=0.01")
    )
    shared = [float(np.linalg.norm(r["mean_move_cm"])) for r in (plain, small)]
    assert shared[1] * 3 < shared[0]
    assert plain["return"] >= 0 and small["return"] >= 0
