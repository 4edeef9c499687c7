"""`checkpoint: best` in an ablation: each run's ``best.ckpt`` is the one evaluated and scored."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from ablation_settings import HARLOW, ROOT, TINY, place_trained_run, planned_evaluation

from metods_core.ablation import (
    AblationError,
    ablation_from_grid,
    inspect_run,
    load_ablation,
    plan_runs,
)
from metods_core.ablation.jobs import stage_commands
from metods_core.ablation.plan import PlannedRun
from metods_core.ablation.report import BEST_CHECKPOINT_NOTE
from metods_core.ablation.state import Decision
from metods_core.cli import main
from metods_core.run_folder import RunFolder
from metods_core.training.checkpoints import read_checkpoint

CHEETAH = ROOT / "recipes" / "mujoco" / "cheetah_dir_metods.yaml"
ML1_REACH = ROOT / "recipes" / "metaworld" / "ml1_reach_metods.yaml"
KEEP_BEST = ["trainer.keep_best=true", "trainer.best_window=2"]


def _ablation_file(tmp_path: Path, **fields: object) -> Path:
    path = tmp_path / "best.yaml"
    data = {"base": str(HARLOW), "grid": {"plasticity.alpha": ["elementwise", "none"]}}
    path.write_text(yaml.safe_dump({**data, "overrides": [*TINY, *KEEP_BEST], **fields}))
    return path


def test_the_file_and_the_flag_choose_the_checkpoint(tmp_path: Path) -> None:
    """`checkpoint: best` reaches every planned run and the plan's JSON; `--checkpoint` (the
    function's argument) replaces the file's; the default is the last checkpoint."""
    best = load_ablation(_ablation_file(tmp_path, checkpoint="best"), out=tmp_path / "a")
    assert {run.checkpoint for run in plan_runs(best, threads=1)} == {"best"}
    assert plan_runs(best, threads=1)[0].to_json()["checkpoint"] == "best"
    plain = load_ablation(_ablation_file(tmp_path), out=tmp_path / "b")
    assert {run.checkpoint for run in plan_runs(plain, threads=1)} == {"last"}
    flag = load_ablation(_ablation_file(tmp_path), out=tmp_path / "c", checkpoint="best")
    assert flag.checkpoint == "best"
    with pytest.raises(AblationError, match="checkpoint"):
        load_ablation(_ablation_file(tmp_path, checkpoint="first"), out=tmp_path / "d")


def test_best_needs_runs_that_keep_it(tmp_path: Path) -> None:
    """A recipe without trainer.keep_best is refused when the ablation is planned, once per
    cell, with the fix; nothing starts."""
    ablation = ablation_from_grid(
        HARLOW, ["plasticity.alpha=elementwise,none"], 2, TINY, tmp_path / "abl", checkpoint="best"
    )
    with pytest.raises(AblationError) as error:
        plan_runs(ablation, threads=1)
    message = str(error.value)
    assert message.count("checkpoint: best") == 2  # two cells, two seeds each
    assert "trainer.keep_best: true" in message
    assert not (tmp_path / "abl").exists()


def test_best_needs_a_budget_that_reaches_it(tmp_path: Path) -> None:
    """A budget that ends before a run could first write best.ckpt (the end of its first
    window, or its first validation meta-test) is refused when planned, naming the field to
    lower; a budget that reaches it is planned."""
    keep = [*TINY, "trainer.keep_best=true", "trainer.best_window=5"]

    def plan(recipe: Path, overrides: list[str], name: str) -> list[PlannedRun]:
        return plan_runs(
            ablation_from_grid(recipe, [], 1, overrides, tmp_path / name, checkpoint="best"), 1
        )

    expected = (
        r"first at outer step 5 \(trainer.best_window\).*set trainer.best_window to at most 4"
    )
    with pytest.raises(AblationError, match=expected):
        plan(HARLOW, [*keep, "trainer.max_steps=4"], "short")
    assert plan(HARLOW, [*keep, "trainer.max_steps=5"], "reached")[0].checkpoint == "best"
    validation = r"first at outer step 10 \(evaluation.validation_every_n_steps\)"
    with pytest.raises(AblationError, match=validation):
        plan(ML1_REACH, ["trainer.max_steps=9"], "validation")
    unscheduled = ["evaluation.every_n_steps=null", "evaluation.validation_every_n_steps=null"]
    with pytest.raises(AblationError, match=r"writes never \(evaluation.validation_every"):
        plan(ML1_REACH, unscheduled, "never")


def test_the_evaluations_name_the_checkpoint(tmp_path: Path) -> None:
    """evaluate, and impairment in its place, get `--checkpoint best`; the last gets none."""
    overrides = [*TINY, *KEEP_BEST]
    (best,) = plan_runs(
        ablation_from_grid(HARLOW, [], 1, overrides, tmp_path / "a", checkpoint="best"), 1
    )
    ((_, evaluate),) = stage_commands(best, Decision("evaluate"))
    assert evaluate[evaluate.index("--checkpoint") + 1] == "best"
    (last,) = plan_runs(ablation_from_grid(HARLOW, [], 1, overrides, tmp_path / "b"), 1)
    assert "--checkpoint" not in stage_commands(last, Decision("evaluate"))[0][1]
    impaired = ablation_from_grid(
        CHEETAH, [], 1, overrides, tmp_path / "c", impairment=True, checkpoint="best"
    )
    ((stage, command),) = stage_commands(plan_runs(impaired, 1)[0], Decision("evaluate"))
    assert stage == "impairment" and command[command.index("--checkpoint") + 1] == "best"


def test_a_run_is_done_once_its_best_checkpoint_is_evaluated(tmp_path: Path) -> None:
    """Trained, with the last checkpoint's evaluation only: evaluate again; with
    evaluation-best.json on the plan's episodes: skip."""
    ablation = ablation_from_grid(
        HARLOW, [], 1, [*TINY, *KEEP_BEST, "trainer.max_steps=2"], tmp_path, checkpoint="best"
    )
    (run,) = plan_runs(ablation, threads=1)
    folder = place_trained_run(run)
    evaluation = planned_evaluation(run)
    folder.evaluation().write_text(json.dumps(evaluation))
    assert inspect_run(run).action == "evaluate"
    folder.evaluation("-best").write_text(json.dumps(evaluation))
    assert inspect_run(run).action == "skip"


@pytest.mark.slow
def test_an_ablation_evaluates_and_reports_each_runs_best_checkpoint(tmp_path: Path) -> None:
    """Real processes: the run trains keeping best.ckpt, is evaluated there (the report's
    outer_step is the best checkpoint's step), and a rerun redoes nothing."""
    out = tmp_path / "best"
    overrides = [*TINY, *KEEP_BEST, "trainer.max_steps=4"]
    code = main(["ablate", str(HARLOW), *overrides, "--checkpoint", "best", "--out", str(out)])
    assert code == 0
    with (out / "results.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    folder = RunFolder(out / "runs" / row["run"])
    best_step = read_checkpoint(folder.best_checkpoint)["global_step"]
    evaluation = json.loads(folder.evaluation("-best").read_text())
    assert row["status"] == "done" and int(row["outer_step"]) == best_step
    assert evaluation["outer_step"] == best_step and float(row["mean_reward"]) == pytest.approx(
        evaluation["mean_reward"]
    )
    assert not folder.evaluation().exists()  # the last checkpoint was not evaluated
    assert BEST_CHECKPOINT_NOTE in (out / "summary.md").read_text()
    assert json.loads((out / "ablation.json").read_text())["checkpoint"] == "best"
    assert "--checkpoint best" in folder.log.read_text()  # the run's processes' log
    assert main(["ablate", str(HARLOW), *overrides, "--checkpoint", "best", "--out", str(out)]) == 0
    with (out / "results.csv").open() as handle:
        assert [r["action"] for r in csv.DictReader(handle)] == ["skipped"]
