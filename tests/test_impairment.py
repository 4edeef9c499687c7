"""`metods impairment`: MuJoCo runs evaluated intact and with each actuator disabled, the
paper's normalised score, impaired / intact over the lifetime and by segment of it; a run
without actuators, or more segments than steps, is one clear error."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import metods_core.impairment as impairment
from metods_core.cli import main
from metods_core.errors import MetodsError
from metods_core.recipe import load_recipe
from metods_core.run_folder import RunFolder
from metods_core.training import train_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = [
    "trainer.max_steps=1",
    "data.batch_tasks=2",
    "trainer.compile=false",
    "trainer.num_threads=1",
    "logger.wandb.mode=disabled",
    "evaluation.episodes=2",
    "evaluation.batch_tasks=2",
]
needs_mujoco = pytest.mark.skipif(
    importlib.util.find_spec("mujoco") is None, reason="needs the MuJoCo extra"
)


@pytest.fixture(scope="module")
def cheetah_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """MetODS and LSTM on cheetah_dir, one outer step of 5-step lifetimes each."""
    root = tmp_path_factory.mktemp("impairment")
    runs = []
    for name in ("cheetah_dir_metods", "cheetah_dir_lstm"):
        recipe = load_recipe(RECIPES / "mujoco" / f"{name}.yaml", [*TINY, "task.episode_steps=5"])
        runs.append(train_recipe(recipe, root / name))
    return runs


@needs_mujoco
@pytest.mark.slow  # 14 evaluations and two trainings: ~15 s on a shared 2-core machine
def test_table_of_two_cheetah_runs(
    cheetah_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every condition is evaluated and written in the run, with the run's impairment record;
    the scores follow from those files."""
    out = tmp_path / "table.md"
    argv = ["impairment", *map(str, cheetah_runs), "--out", str(out), "--json"]
    assert main(argv) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["actuators"] == 6 and len(table["runs"]) == 2
    assert table["segments"] == [[0, 2], [2, 3], [3, 4], [4, 5]]  # 5 steps in 4 segments
    returns, curves = [], []
    for run in cheetah_runs:
        folder = RunFolder(run)
        tags = [""] + [f"-task.impair_actuator={k}" for k in range(6)]
        files = [json.loads(folder.evaluation(tag).read_text()) for tag in tags]
        returns.append([file["mean_reward"] for file in files])
        curves.append([file["reward_curve"] for file in files])
        record = impairment.read_impairment(run)  # what an ablation scores the run from
        assert record is not None and record["episodes"] == 2
        assert [record["intact"], *record["impaired"]] == returns[-1]
        assert [record["intact_reward_curve"], *record["impaired_reward_curves"]] == curves[-1]
    for row, own, curve in zip(table["runs"], returns, curves, strict=True):
        assert row["intact"] == pytest.approx(own[0])
        assert row["impaired"] == pytest.approx(own[1:])
        mean_impaired = sum(own[1:]) / 6
        assert row["mean_impaired"] == pytest.approx(mean_impaired)
        expected = mean_impaired / own[0] if own[0] > 0 else None
        assert row["impaired_over_intact"] == pytest.approx(expected)
        for k in range(6):
            best = max(other[k + 1] for other in returns)
            score = own[k + 1] / best if best > 0 else None
            assert row["normalised_by_condition"][k] == pytest.approx(score)
        for s, (start, end) in enumerate(table["segments"]):
            intact = sum(curve[0][start:end]) / (end - start)
            impaired = sum(sum(c[start:end]) / (end - start) for c in curve[1:]) / 6
            expected = impaired / intact if intact > 0 else None
            assert row["impaired_over_intact_by_segment"][s] == pytest.approx(expected)
    markdown = out.read_text()
    assert "| K = 5 |" in markdown and all(str(run) in markdown for run in cheetah_runs)
    assert "| run | steps 1–2 | step 3 | step 4 | step 5 |" in markdown
    capsys.readouterr()
    assert main(["impairment", str(cheetah_runs[0]), "--segments", "6"]) == 2
    err = capsys.readouterr().err
    assert "--segments must be between 1 and the lifetime's 5 steps, got 6" in err
    assert "Traceback" not in err


def _record(
    run: str,
    intact: float,
    impaired: list[float],
    ci: float = 1.0,
    curves: list[list[float]] | None = None,
) -> dict[str, Any]:
    """An impairment record as ``evaluate_impairment`` writes it; by default each reward curve
    spreads its return evenly over 4 steps."""
    curves = curves or [[value / 4] * 4 for value in [intact, *impaired]]
    return {
        "run": run,
        "task": "cheetah_dir",
        "actuators": len(impaired),
        "checkpoint": "last",
        "episodes": 2,
        "greedy": False,
        "freeze_memory": None,
        "intact": intact,
        "intact_ci95": ci,
        "intact_reward_curve": curves[0],
        "impaired": impaired,
        "impaired_ci95": [ci] * len(impaired),
        "impaired_reward_curves": curves[1:],
    }


def test_normalisation_by_the_best_run_in_each_condition() -> None:
    """Known returns: scores divide by each condition's best run; a condition whose best is not
    positive beyond its 95 % CI has no score and is left out of the average (counted in
    normalised_conditions)."""

    def score(a: list[float], b: list[float]) -> list[dict[str, Any]]:
        records = [_record("a", 200.0, a), _record("b", 100.0, b)]
        return impairment.score_impairment(records)["runs"]  # type: ignore[no-any-return]

    a, b = score([100.0, 50.0], [80.0, -10.0])
    assert a["normalised_by_condition"] == [1.0, 1.0] and a["normalised"] == 1.0
    assert b["normalised_by_condition"] == [0.8, -0.2] and b["normalised"] == pytest.approx(0.3)
    assert a["impaired_over_intact"] == 75.0 / 200 and b["impaired_over_intact"] == 35.0 / 100
    assert b["normalised_intact"] == 0.5
    assert a["normalised_conditions"] == b["normalised_conditions"] == 2
    a, b = score([100.0, -5.0], [80.0, -5.0])  # no run keeps a positive return without K = 1
    assert a["normalised_by_condition"][1] is None and b["normalised_by_condition"][1] is None
    assert a["normalised"] == 1.0 and b["normalised"] == pytest.approx(0.8)
    assert a["normalised_conditions"] == b["normalised_conditions"] == 1
    table = impairment.score_impairment(
        [_record("a", 200.0, [100.0, -5.0]), _record("b", 100.0, [80.0, -5.0])]
    )
    assert "0.80 (over 1 of 2)" in impairment.format_markdown(table)
    # a best return within its CI of zero (0.3 +- 1.0) is no reference: the others' ratios
    # would be -16.7 and worse (seen on cheetah_dir, K = 3), so it is left out too
    a, b = score([100.0, 0.3], [80.0, -5.0])
    assert a["normalised_by_condition"][1] is None and b["normalised_by_condition"][1] is None
    assert b["normalised"] == pytest.approx(0.8) and b["normalised_conditions"] == 1
    a, b = score([100.0, 1.5], [80.0, -5.0])  # beyond its CI: a reference again
    assert b["normalised_by_condition"][1] == pytest.approx(-5.0 / 1.5)
    a, _ = score([-5.0, -5.0], [-5.0, -5.0])
    assert a["normalised"] is None and a["normalised_conditions"] == 0


def test_records_of_different_robots_or_lifetimes_are_not_scored_together() -> None:
    """Scoring a cheetah's record against an ant's, or 4-step lifetimes against 5-step ones, is
    one clear error naming both runs."""
    cheetah, ant = _record("a", 1.0, [1.0] * 6), _record("b", 1.0, [1.0] * 8)
    with pytest.raises(MetodsError, match="b .* and a .* have different numbers of actuators"):
        impairment.score_impairment([cheetah, ant])
    longer = _record("c", 1.0, [1.0] * 6, curves=[[0.2] * 5] * 7)
    with pytest.raises(MetodsError, match="c and a have lifetimes of different lengths"):
        impairment.score_impairment([cheetah, longer])
    with pytest.raises(MetodsError, match="no runs to score"):
        impairment.score_impairment([])


def test_a_run_without_actuators_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Harlow run: exit 2, one line naming the run, its task and what is needed."""
    harlow = load_recipe(
        RECIPES / "harlow" / "metods.yaml", [*TINY, "plasticity.recursion_steps=1"]
    )
    run = train_recipe(harlow, tmp_path / "harlow")
    capsys.readouterr()
    assert main(["impairment", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "harlow" in err and "MuJoCo" in err and "Traceback" not in err
    assert not list(run.glob("evaluation*.json"))


def test_impaired_over_intact_by_segment_of_the_lifetime() -> None:
    """Known reward curves: each segment's mean impaired reward over its intact reward; a
    segment whose intact reward is not positive has no ratio; a policy that recovers from the
    impairment shows a rising ratio."""
    curves = [
        [1.0, 1.0, 2.0, 2.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
        [1.0, 1.0, 2.0, 2.0, 1.0, 1.0],
    ]
    record = _record("a", 6.0, [4.0, 8.0], ci=0.0, curves=curves)
    table = impairment.score_impairment([record], segments=3)
    assert table["segments"] == [[0, 2], [2, 4], [4, 6]]
    (row,) = table["runs"]
    assert row["impaired_over_intact_by_segment"] == [0.5, 0.75, None]
    markdown = impairment.format_markdown(table)
    assert "| a | 0.50 | 0.75 | – |" in markdown and "steps 5–6" in markdown
    assert impairment.segment_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    for bad in (0, 8):
        with pytest.raises(MetodsError, match="--segments must be between 1 and"):
            impairment.segment_bounds(7, bad)


def test_frozen_memory_reaches_every_evaluation_and_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--freeze-memory K`` is passed to the intact and every impaired evaluation, recorded in
    the table, its record's file name and the table's heading; a negative K is refused before
    any evaluation, too many segments before the second run's."""
    run = tmp_path / "a"
    run.mkdir()
    seen: list[tuple[str, Any]] = []

    def fake_evaluate(
        run: Path, episodes: Any, overrides: list[str], *rest: Any, **options: Any
    ) -> dict:
        seen.append((",".join(overrides), options.get("freeze_memory")))
        return {
            "mean_reward": 4.0,
            "mean_reward_ci95": 0.0,
            "reward_curve": [1.0] * 4,
            "episodes": 2,
            "greedy": False,
        }

    monkeypatch.setattr(impairment, "actuator_count", lambda run: ("cheetah_dir", 2))
    monkeypatch.setattr(impairment, "evaluate_run", fake_evaluate)
    table = impairment.impairment_table([run], freeze_memory=7)
    assert seen == [("", 7), ("task.impair_actuator=0", 7), ("task.impair_actuator=1", 7)]
    assert table["freeze_memory"] == 7
    assert "checkpoint last, memory frozen from step 7 (" in impairment.format_markdown(table)
    assert impairment.read_impairment(run, freeze_memory=7)["freeze_memory"] == 7  # type: ignore[index]
    assert impairment.read_impairment(run) is None
    seen.clear()
    plain = impairment.impairment_table([run])
    assert {frozen for _, frozen in seen} == {None} and plain["freeze_memory"] is None
    assert "memory frozen" not in impairment.format_markdown(plain)
    seen.clear()
    other = tmp_path / "b"
    other.mkdir()
    with pytest.raises(MetodsError, match="--segments must be between 1 and the lifetime's 4"):
        impairment.impairment_table([run, other], segments=5)
    assert len(seen) == 3  # stopped after the first run's evaluations, before the second's
    seen.clear()
    assert main(["impairment", str(run), "--freeze-memory", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--freeze-memory must be a step of the lifetime (0 or more), got -1" in err
    assert "Traceback" not in err and not seen


@needs_mujoco
@pytest.mark.slow  # a `metods evaluate` and a `metods impairment` process per run: ~25 s
def test_an_ablation_with_impairment_scores_its_runs(
    cheetah_runs: list[Path], tmp_path: Path
) -> None:
    """Two trained runs placed where an ablation with ``impairment: true`` plans them: it runs
    their impairment process alone, whose intact evaluation is the run's evaluation, and its
    reports score them as ``metods impairment`` does; run again, it redoes nothing."""
    from metods_core.ablation import ablation_from_grid, run_ablation
    from metods_core.ablation.jobs import log_path_of

    recipes = ",".join(str(RECIPES / "mujoco" / f"{run.name}.yaml") for run in cheetah_runs)
    overrides = [*TINY, "task.episode_steps=5"]
    ablation = ablation_from_grid(
        RECIPES / "mujoco" / "cheetah_dir_metods.yaml",
        [f"recipe={recipes}"],
        1,
        overrides,
        tmp_path / "ablation",
        impairment=True,
    )
    for run in cheetah_runs:  # trained to the plan's budget; evaluated by the ablation itself
        copy = tmp_path / "ablation" / "runs" / f"recipe={run.name}-seed0"
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("evaluation*", "impairment*"))
    result = run_ablation(ablation, jobs=2, echo=lambda _: None)
    assert [(o.status, o.action) for o in result.outcomes] == [("done", "evaluated")] * 2
    for outcome in result.outcomes:
        log = log_path_of(outcome.run).read_text()
        assert " impairment " in log and " evaluate " not in log  # one process, not two
        assert outcome.evaluation["mean_reward"] == outcome.impairment["intact"]  # type: ignore[index]
    table = impairment.score_impairment([o.impairment for o in result.outcomes])  # type: ignore[misc]
    with (tmp_path / "ablation" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for row, scored in zip(rows, table["runs"], strict=True):
        for column, key in (("normalised_impaired_seed", "normalised"),
                            ("impaired_over_intact", "impaired_over_intact")):  # fmt: skip
            expected = scored[key]
            assert (row[column] == "") if expected is None else float(row[column]) == expected
    markdown = (tmp_path / "ablation" / "impairment.md").read_text()
    assert "## Seed 0" in markdown and "| recipe=cheetah_dir_lstm-seed0 |" in markdown
    again = run_ablation(ablation, jobs=2, echo=lambda _: None)
    assert [o.action for o in again.outcomes] == ["skipped"] * 2
    assert [o.impairment for o in again.outcomes] == [o.impairment for o in result.outcomes]
