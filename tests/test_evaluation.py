"""Meta-testing a trained run: metrics with confidence intervals, JSON and plots."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from metods_plugins.tasks.harlow import HarlowTasks

from metods_core.cli import main
from metods_core.errors import MetodsError
from metods_core.evaluation import evaluate_run, meta_test, overrides_tag, summarise
from metods_core.interfaces import Split, TaskBatch
from metods_core.recipe import load_recipe
from metods_core.run_folder import RunFolder
from metods_core.statistics import mean_and_ci95, t_quantile_95
from metods_core.testing.fakes import FakeEnv, FakeTaskBatch, FakeTasks, create_tiny_agent
from metods_core.training import train_recipe

ROOT = Path(__file__).resolve().parents[1]
HARLOW = ROOT / "recipes" / "harlow" / "metods.yaml"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Harlow run trained for 3 outer steps on 4 tasks, a checkpoint after each."""
    recipe = load_recipe(
        HARLOW,
        [
            "data.batch_tasks=4",
            "plasticity.recursion_steps=1",
            "trainer.max_steps=3",
            "trainer.log_every_n_steps=1",
            "trainer.checkpoint_every_n_steps=1",
            "logger.wandb.mode=disabled",
            "trainer.compile=false",
            "evaluation.batch_tasks=16",
        ],
    )
    return train_recipe(recipe, tmp_path_factory.mktemp("eval") / "run")


def test_mean_and_ci95_uses_student_t() -> None:
    """The half-width is t(n-1) standard errors; NaN entries are left out."""
    mean, half, count = mean_and_ci95([1.0, 2.0, 3.0, float("nan")])
    assert (mean, count) == (2.0, 3)
    assert half == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-6)
    assert math.isnan(mean_and_ci95([5.0])[1])


def test_t_quantile_approaches_the_normal_one() -> None:
    """The tabulated and extrapolated t quantiles join smoothly and tend to 1.96."""
    assert t_quantile_95(30) == pytest.approx(2.042)
    assert t_quantile_95(31) == pytest.approx(2.040, abs=2e-3)
    assert t_quantile_95(60) == pytest.approx(2.000, abs=2e-3)
    assert t_quantile_95(10**6) == pytest.approx(1.95996, abs=1e-4)


def test_summarise_reports_scalars_and_curves() -> None:
    """Per-task scalars give mean, ci95 and n; (tasks, K) metrics give per-index curves."""
    metrics = {
        "episode_reward": torch.tensor([1.0, 3.0]),
        "accuracy_by_presentation": torch.tensor([[1.0, 0.0], [0.0, float("nan")]]),
    }
    summary = summarise(metrics)
    assert summary["mean_reward"] == 2.0 and summary["mean_reward_n"] == 2
    assert summary["accuracy_by_presentation"] == [0.5, 0.0]


def test_meta_test_draws_its_tasks_in_one_piece_whatever_the_batch_size() -> None:
    """A meta-test runs the same tasks in parts of ``batch_tasks`` as in one batch (so a finite
    split is covered evenly however it is batched); each part's env has its own seed."""
    sampler = FakeTasks(FakeTasks.Config())
    agent, _ = create_tiny_agent(sampler)
    built: list[FakeTaskBatch] = []

    class RecordingTasks(FakeTasks):
        def make_env(self, tasks: TaskBatch) -> FakeEnv:
            assert isinstance(tasks, FakeTaskBatch)
            built.append(tasks)
            return super().make_env(tasks)

    recording = RecordingTasks(FakeTasks.Config())
    meta_test(agent, recording, episodes=10, batch_tasks=10, greedy=True, seed=3)
    whole = built.pop()
    meta_test(agent, recording, episodes=10, batch_tasks=4, greedy=True, seed=3)
    assert [part.size for part in built] == [4, 4, 2]
    assert torch.equal(torch.cat([part.cue for part in built]), whole.cue)
    assert torch.equal(torch.cat([part.target for part in built]), whole.target)
    assert len({part.seed for part in built}) == 3


def test_evaluate_run_writes_json_and_plots(trained_run: Path) -> None:
    """Harlow's evaluation reports reward and accuracies, and writes PNG plots."""
    result = evaluate_run(trained_run, episodes=40)
    for key in ("mean_reward", "accuracy_first", "accuracy_later", "mean_reward_ci95"):
        assert key in result
    assert result["mean_reward_n"] == 40
    assert json.loads((trained_run / "evaluation.json").read_text())["episodes"] == 40
    assert (trained_run / "training_curve.png").stat().st_size > 0
    assert (trained_run / "accuracy_by_presentation.png").stat().st_size > 0
    rows = (trained_run / "accuracy_by_presentation.csv").read_text().splitlines()
    assert rows[0] == "index,mean,ci95" and len(rows) == 1 + 6


def test_overrides_tag_names_files_safely() -> None:
    """No overrides: no tag; otherwise the overrides in a file-name-safe, bounded form."""
    assert overrides_tag([]) == ""
    assert overrides_tag(["task.impair_actuator=3"]) == "-task.impair_actuator=3"
    assert overrides_tag(["a=x/y", "b=1 2"]) == "-a=x_y,b=1_2"
    long = overrides_tag([f"task.field_{index}=value" for index in range(10)])
    assert len(long) <= 70 and long != overrides_tag([f"task.field_{i}=other" for i in range(10)])


def test_evaluation_under_overrides_keeps_the_plain_one(trained_run: Path) -> None:
    """An evaluation with overrides writes tagged files beside, never over, the plain ones."""
    plain = evaluate_run(trained_run, episodes=16)
    plain_curve = (trained_run / "accuracy_by_presentation.csv").read_text()
    changed = evaluate_run(trained_run, episodes=16, overrides=["task.trials=3"])
    assert json.loads((trained_run / "evaluation.json").read_text()) == {
        key: value for key, value in plain.items() if key != "plots"
    }
    tagged = json.loads((trained_run / "evaluation-task.trials=3.json").read_text())
    assert tagged["overrides"] == ["task.trials=3"]
    assert len(tagged["accuracy_by_presentation"]) == 3 == len(changed["accuracy_by_presentation"])
    assert (trained_run / "accuracy_by_presentation.csv").read_text() == plain_curve
    rows = (trained_run / "accuracy_by_presentation-task.trials=3.csv").read_text().splitlines()
    assert len(rows) == 1 + 3
    assert (trained_run / "accuracy_by_presentation-task.trials=3.png").stat().st_size > 0


def test_evaluation_of_an_earlier_checkpoint_is_recorded_beside_the_last(
    trained_run: Path,
) -> None:
    """The summary names the checkpoint and its outer step; an earlier checkpoint's files are
    tagged with its name and leave the last checkpoint's evaluation as it was."""
    last = evaluate_run(trained_run, episodes=8)
    assert last["outer_step"] == 3
    assert Path(last["checkpoint"]).resolve() == RunFolder(trained_run).last_checkpoint.resolve()
    earlier_path = RunFolder(trained_run).periodic_checkpoint(2)
    earlier = evaluate_run(trained_run, episodes=8, checkpoint=earlier_path)
    assert earlier["outer_step"] == 2 and earlier["checkpoint"] == str(earlier_path)
    written = json.loads((trained_run / "evaluation-step=000002.json").read_text())
    assert written["outer_step"] == 2
    assert json.loads((trained_run / "evaluation.json").read_text())["outer_step"] == 3
    assert (trained_run / "accuracy_by_presentation-step=000002.csv").is_file()


def test_evaluation_uses_held_out_tasks_and_is_reproducible(trained_run: Path) -> None:
    """Two evaluations of one run agree exactly (seeded test split)."""
    first = evaluate_run(trained_run, episodes=20)
    second = evaluate_run(trained_run, episodes=20)
    assert first["mean_reward"] == second["mean_reward"]


def test_evaluation_on_the_train_split(trained_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``split="train"`` meta-tests on the training tasks only, and tags its files ``-train``;
    the default evaluation draws only held-out tasks."""
    splits: list[str] = []
    sample = HarlowTasks.sample

    def recording_sample(self: HarlowTasks, n: int, split: Split, generator: Any) -> Any:
        splits.append(split)
        return sample(self, n, split, generator)

    monkeypatch.setattr(HarlowTasks, "sample", recording_sample)
    held_out = evaluate_run(trained_run, episodes=16)
    assert set(splits) == {"test"} and held_out["split"] == "test"
    splits.clear()
    train = evaluate_run(trained_run, episodes=16, split="train")
    assert set(splits) == {"train"} and train["split"] == "train"
    written = json.loads((trained_run / "evaluation-train.json").read_text())
    assert written["split"] == "train" and written["mean_reward"] == train["mean_reward"]
    assert json.loads((trained_run / "evaluation.json").read_text())["split"] == "test"
    assert (trained_run / "accuracy_by_presentation-train.csv").is_file()


def test_evaluation_with_frozen_memory_is_tagged_beside_the_plain_one(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``freeze_memory`` K (the memory lesion) writes files tagged ``-freeze_memory=K`` and
    records K; the plain evaluation records none; a K beyond the lifetime is one clear error
    before any step, and leaves no file."""
    plain = evaluate_run(trained_run, episodes=16)
    frozen = evaluate_run(trained_run, episodes=16, freeze_memory=0)
    assert plain["freeze_memory"] is None and frozen["freeze_memory"] == 0
    written = json.loads((trained_run / "evaluation-freeze_memory=0.json").read_text())
    assert written["mean_reward"] == frozen["mean_reward"]
    assert json.loads((trained_run / "evaluation.json").read_text())["freeze_memory"] is None
    assert (trained_run / "accuracy_by_presentation-freeze_memory=0.csv").is_file()
    steps = load_recipe(HARLOW).task.config.max_steps  # a Harlow lifetime's steps
    with pytest.raises(MetodsError, match=f"from 0 to {steps - 1} here, got {steps}"):
        evaluate_run(trained_run, episodes=16, freeze_memory=steps)
    assert not (trained_run / f"evaluation-freeze_memory={steps}.json").exists()
    assert main(["evaluate", str(trained_run), "--freeze-memory", "-2"]) == 2
    err = capsys.readouterr().err
    assert "evaluate: --freeze-memory must be a step of the lifetime (0 or more), got -2" in err
    assert "Traceback" not in err


def test_cli_evaluate_runs_without_lightning(trained_run: Path, tmp_path: Path) -> None:
    """`metods evaluate` on the CPU (and the impairment module beside it) never imports
    Lightning: about 2.5 s less at the start of every evaluation process, one per ablation
    run (measured in the commit that made it so)."""
    run = shutil.copytree(trained_run, tmp_path / "run")
    code = (
        "import sys\n"
        "from metods_core.cli import main\n"
        "import metods_core.impairment\n"
        f"assert main(['evaluate', {str(run)!r}, '--episodes', '4', '--json']) == 0\n"
        "loaded = sorted(name for name in sys.modules if name.split('.')[0] == 'lightning')\n"
        "assert not loaded, loaded[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, capture_output=True)


def test_cli_evaluate_json(trained_run: Path) -> None:
    """`metods evaluate RUN --json --split train` prints one JSON object with the Harlow keys
    and the split."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "metods_core.cli",
            "evaluate",
            str(trained_run),
            "--json",
            "--episodes",
            "16",
            "--split",
            "train",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(result.stdout)
    assert {"mean_reward", "accuracy_first", "accuracy_later"} <= data.keys()
    assert data["split"] == "train"


def test_meta_test_spread_benchmark_repeats_evaluate_under_other_seeds(trained_run: Path) -> None:
    """benchmarks/meta_test_spread.py: its first seed is `metods evaluate`'s figure; the others
    are other evaluation seeds of the same checkpoint; fewer than 2 seeds is refused (exit 2)."""
    path = ROOT / "benchmarks" / "meta_test_spread.py"
    spec = importlib.util.spec_from_file_location("meta_test_spread", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.spread(trained_run, seeds=3, episodes=8)
    assert result["metric"] == "episode_reward" and len(result["values"]) == 3
    plain = evaluate_run(trained_run, episodes=8)["mean_reward"]
    assert result["values"][0] == pytest.approx(plain, rel=1e-6)
    assert len(set(result["values"])) == 3
    assert result["std"] == statistics.stdev(result["values"])
    refused = subprocess.run(
        [sys.executable, str(path), str(trained_run), "--seeds", "1"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "at least 2" in refused.stderr
