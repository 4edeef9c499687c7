"""An ablation with ``impairment: true``: every run also evaluated with each actuator disabled,
the runs of each seed scored against each other (results.csv, summary.md, impairment.md); a
task without actuators is refused before anything starts."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from ablation_settings import place_trained_run, planned_evaluation

from metods_core.ablation import (
    AblationError,
    ablation_from_grid,
    inspect_run,
    load_ablation,
    plan_runs,
)
from metods_core.ablation.jobs import stage_commands
from metods_core.ablation.plan import PlannedRun
from metods_core.ablation.report import IMPAIRMENT_COLUMNS, results_rows, write_impairment
from metods_core.ablation.state import Decision, RunOutcome
from metods_core.cli import main
from metods_core.impairment import score_impairment

ROOT = Path(__file__).resolve().parents[1]
MUJOCO = ROOT / "recipes" / "mujoco"
SHIPPED = ROOT / "recipes" / "ablations" / "cheetah_dir_impairment.yaml"
TINY = ["data.batch_tasks=2", "logger.wandb.mode=disabled", "trainer.compile=false"]


def _cheetah_grid(tmp_path: Path, seeds: int = 2, impairment: bool = True) -> list[PlannedRun]:
    grid = [f"recipe={MUJOCO / 'cheetah_dir_metods.yaml'},{MUJOCO / 'cheetah_dir_lstm.yaml'}"]
    ablation = ablation_from_grid(
        MUJOCO / "cheetah_dir_metods.yaml", grid, seeds, TINY, tmp_path, impairment=impairment
    )
    return plan_runs(ablation, threads=1)


def _record(intact: float, impaired: list[float], ci: float = 1.0) -> dict[str, Any]:
    """A run's impairment record (``evaluate_impairment``), its returns spread over 4 steps."""
    return {
        "run": "somewhere",
        "task": "cheetah_dir",
        "actuators": len(impaired),
        "checkpoint": "last",
        "episodes": 100,
        "greedy": False,
        "freeze_memory": None,
        "intact": intact,
        "intact_ci95": ci,
        "intact_reward_curve": [intact / 4] * 4,
        "impaired": impaired,
        "impaired_ci95": [ci] * len(impaired),
        "impaired_reward_curves": [[value / 4] * 4 for value in impaired],
    }


def test_the_shipped_file_compares_three_agents_on_five_seeds(tmp_path: Path) -> None:
    """recipes/ablations/cheetah_dir_impairment.yaml: the paper's rule, write20 and the LSTM at
    64 tasks, 5 seeds, every run evaluated impaired on 100 lifetimes per condition."""
    ablation = load_ablation(SHIPPED, out=tmp_path / "impairment")
    assert ablation.impairment and ablation.seeds == [0, 1, 2, 3, 4] and ablation.episodes == 100
    runs = plan_runs(ablation, threads=1)
    assert len(runs) == 15 and all(run.impairment for run in runs)
    assert {run.cell for run in runs} == {
        "recipe=cheetah_dir_metods",
        "recipe=cheetah_dir_metods_write20",
        "recipe=cheetah_dir_lstm",
    }
    assert {run.resolved["data"]["batch_tasks"] for run in runs} == {64}
    assert {run.max_steps for run in runs} == {1250}


def test_a_task_without_actuators_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """Harlow has no actuator to disable: the plan says so, naming the task, and creates
    nothing; the same recipe without impairment plans."""
    harlow = ROOT / "recipes" / "harlow" / "metods.yaml"
    ablation = ablation_from_grid(harlow, [], 2, TINY, tmp_path / "harlow", impairment=True)
    with pytest.raises(AblationError) as error:
        plan_runs(ablation, threads=1)
    message = str(error.value)
    assert "impairment: true needs a task with actuators" in message and "'harlow'" in message
    assert message.count("impairment: true") == 1  # once per cell, not per seed
    assert not (tmp_path / "harlow").exists()
    plain = ablation_from_grid(harlow, [], 2, TINY, tmp_path / "harlow")
    assert len(plan_runs(plain, threads=1)) == 2


def test_the_impairment_stage_replaces_the_evaluation(tmp_path: Path) -> None:
    """Each run's processes: train, then ``metods impairment`` on the plan's episodes, whose
    intact evaluation is the evaluate stage's; without impairment, evaluate."""
    run = _cheetah_grid(tmp_path)[0]
    stages = stage_commands(run, Decision("train"))
    assert [name for name, _ in stages] == ["train", "impairment"]
    assert [name for name, _ in stage_commands(run, Decision("evaluate"))] == ["impairment"]
    command = stages[-1][1]
    assert command[command.index("impairment") + 1] == str(run.run_dir)
    assert command[command.index("--episodes") + 1] == str(run.episodes)
    plain = _cheetah_grid(tmp_path / "plain", impairment=False)[0]
    assert [name for name, _ in stage_commands(plain, Decision("evaluate"))] == ["evaluate"]


def test_a_trained_run_is_evaluated_again_until_its_impairment_record_matches(
    tmp_path: Path,
) -> None:
    """Trained and evaluated, but no impairment record, or one of other episodes: evaluate;
    a matching record: skip."""
    run = _cheetah_grid(tmp_path, seeds=1)[0]
    folder = place_trained_run(run)
    evaluation = planned_evaluation(run)
    folder.evaluation().write_text(json.dumps(evaluation))
    assert inspect_run(run).action == "evaluate"
    record = {**_record(1.0, [1.0] * 6), "episodes": run.episodes, "greedy": run.greedy}
    folder.impairment().write_text(json.dumps({**record, "episodes": run.episodes + 1}))
    assert inspect_run(run).action == "evaluate"
    folder.impairment().write_text(json.dumps(record)[:40])  # cut short while written
    assert inspect_run(run).action == "evaluate"
    folder.impairment().write_text(json.dumps(record))
    assert inspect_run(run).action == "skip"


def test_scores_within_each_seed_and_over_all_runs(tmp_path: Path) -> None:
    """Known records of two agents on two seeds: each run's normalised score against the other
    agent of its seed and against all four runs, as ``score_impairment`` gives them; a failed
    run has none and is left out of its seed's comparison."""
    runs = _cheetah_grid(tmp_path)  # metods seed 0, 1, then lstm seed 0, 1
    records = [
        _record(100.0, [50.0, 40.0]),
        _record(100.0, [20.0, 10.0]),
        _record(80.0, [40.0, 40.0]),
        _record(90.0, [30.0, 40.0]),
    ]
    outcomes = [
        RunOutcome(
            run, "done", "trained", 1.0, evaluation={"mean_reward": r["intact"]}, impairment=r
        )  # fmt: skip
        for run, r in zip(runs, records, strict=True)
    ]
    rows = {row["run"]: row for row in results_rows(["recipe"], outcomes)}
    seed0 = score_impairment([records[0], records[2]])["runs"]
    overall = score_impairment(records)["runs"]
    metods0, lstm0 = rows[runs[0].name], rows[runs[2].name]
    assert metods0["normalised_impaired_seed"] == pytest.approx(seed0[0]["normalised"]) == 1.0
    assert lstm0["normalised_impaired_seed"] == pytest.approx((40 / 50 + 1.0) / 2)
    assert lstm0["normalised_impaired_all"] == pytest.approx(overall[2]["normalised"])
    assert metods0["impaired_mean_reward"] == 45.0 and lstm0["impaired_over_intact"] == 0.5
    assert rows[runs[1].name]["normalised_impaired_seed"] == pytest.approx((20 / 30 + 10 / 40) / 2)
    written = write_impairment(tmp_path, outcomes)
    assert [path.name for path in written] == ["impairment.md", "impairment.json"]
    markdown = written[0].read_text()
    assert "## Seed 0" in markdown and "## Seed 1" in markdown and "## All runs" in markdown
    assert f"| {runs[3].name} |" in markdown
    data = json.loads(written[1].read_text())
    assert set(data["seeds"]) == {"0", "1"} and len(data["all"]["runs"]) == 4
    outcomes[3] = RunOutcome(runs[3], "failed", "trained", error="boom")
    rows = {row["run"]: row for row in results_rows(["recipe"], outcomes)}
    assert rows[runs[1].name]["normalised_impaired_seed"] == 1.0  # alone in its seed now
    assert all(rows[runs[3].name][column] is None for column in IMPAIRMENT_COLUMNS)


def test_runs_of_different_robots_are_not_scored_together(tmp_path: Path) -> None:
    """A cheetah's record beside an ant's: the returns are kept, the scores left empty, and
    impairment.md says why."""
    runs = _cheetah_grid(tmp_path, seeds=1)
    outcomes = [
        RunOutcome(runs[0], "done", "trained", impairment=_record(100.0, [50.0] * 6)),
        RunOutcome(runs[1], "done", "trained", impairment=_record(100.0, [50.0] * 8)),
    ]
    rows = results_rows(["recipe"], outcomes)
    assert rows[0]["impaired_mean_reward"] == 50.0 and rows[0]["normalised_impaired_seed"] is None
    markdown = write_impairment(tmp_path, outcomes)[0].read_text()
    assert "cannot be scored together" in markdown and "different numbers of actuators" in markdown


def test_without_impairment_no_columns_and_no_file(tmp_path: Path) -> None:
    """An ablation without impairment keeps its results.csv columns and writes no
    impairment.md; the evaluation's lesion setting is not a metric column."""
    run = _cheetah_grid(tmp_path, seeds=1, impairment=False)[0]
    evaluation = {"mean_reward": 1.0, "episodes": 4, "freeze_memory": None}
    outcome = RunOutcome(run, "done", "trained", evaluation=evaluation)
    (row,) = results_rows(["recipe"], [outcome])
    assert not set(IMPAIRMENT_COLUMNS) & set(row)
    assert "freeze_memory" not in row and "episodes" not in row
    assert write_impairment(tmp_path, [outcome]) == []
    assert math.isclose(row["mean_reward"], 1.0)


def test_cli_flag_turns_impairment_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``metods ablate RECIPE --grid ... --impairment`` on Harlow is the plan's one clear error,
    exit 2: the flag reached the plan."""
    harlow = ROOT / "recipes" / "harlow" / "metods.yaml"
    argv = ["ablate", str(harlow), *TINY, "--grid", "plasticity.recursion_steps=1,2"]
    assert main([*argv, "--impairment", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "impairment: true needs a task with actuators" in err and "Traceback" not in err
