"""`metods ablate`: grid expansion, statistics, run decisions, failures, resume and a kill."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from ablation_settings import HARLOW, ROOT, TINY

from metods_core.ablation import (
    Ablation,
    AblationError,
    AblationResult,
    ablation_from_grid,
    inspect_run,
    is_ablation_file,
    load_ablation,
    mean_curve,
    plan_runs,
    run_ablation,
    summarise,
    threads_per_job,
)
from metods_core.ablation import jobs as jobs_module
from metods_core.ablation.lock import hold_lock
from metods_core.ablation.plan import format_value
from metods_core.ablation.report import format_summary, paired_differences
from metods_core.cli import main
from metods_core.errors import MetodsError
from metods_core.recipe import load_recipe, recipe_to_yaml
from metods_core.statistics import mean_and_ci95
from metods_core.training.checkpoints import read_checkpoint

ABLATIONS = ROOT / "recipes" / "ablations"
HELPERS = ROOT / "tests" / "helpers"
NAN_RULE = "tiny_plugins:NaNAfterTwoSteps"


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def by_name(result) -> dict:
    return {outcome.run.cell: outcome for outcome in result.outcomes}


# ---------------------------------------------------------------------------------------------
# Expansion and validation (no training)
# ---------------------------------------------------------------------------------------------


def test_grid_times_seeds_expands_to_unique_runs(tmp_path: Path) -> None:
    """Every grid cell runs once per seed, with its values, seed, W&B group and threads set."""
    grid = ["plasticity.recursion_steps=1,2,4", "plasticity.alpha=elementwise,none"]
    ablation = ablation_from_grid(HARLOW, grid, 3, [*TINY, "trainer.max_steps=2"], tmp_path / "abl")
    runs = plan_runs(ablation, threads=1)
    assert len(runs) == 3 * 2 * 3
    assert len({run.name for run in runs}) == len(runs)
    assert len({run.cell for run in runs}) == 6
    first = runs[0]
    assert first.name == "recursion_steps=1,alpha=elementwise-seed0"
    assert first.run_dir == tmp_path / "abl" / "runs" / first.name
    assert {"seed=0", "logger.wandb.group=abl", "trainer.num_threads=1"} <= set(first.overrides)
    last = runs[-1]
    assert last.seed == 2 and last.values == {
        "plasticity.recursion_steps": 4,
        "plasticity.alpha": "none",
    }
    assert last.resolved["plasticity"]["recursion_steps"] == 4
    assert last.resolved["plasticity"]["alpha"] == "none"
    assert last.resolved["logger"]["wandb"]["group"] == "abl" and last.max_steps == 2


def test_a_name_axis_switches_the_component(tmp_path: Path) -> None:
    """A grid over plasticity.name replaces the section: MetODS-only keys are dropped."""
    ablation = ablation_from_grid(HARLOW, ["plasticity.name=metods,hebbian"], 1, [], tmp_path)
    metods, hebbian = plan_runs(ablation, threads=1)
    assert metods.resolved["plasticity"]["recursion_steps"] == 4
    assert hebbian.resolved["plasticity"]["name"] == "hebbian"
    assert "recursion_steps" not in hebbian.resolved["plasticity"]
    assert hebbian.resolved["plasticity"]["alpha"] == "elementwise"  # kept: Hebbian has it too


def test_recipe_axis_varies_the_base_file(tmp_path: Path) -> None:
    """The shipped baselines ablation runs each recipes/harlow file, named after it."""
    path = ABLATIONS / "harlow_baselines.yaml"
    assert is_ablation_file(path) and not is_ablation_file(HARLOW)
    ablation = load_ablation(path, ["trainer.max_steps=2"], out=tmp_path / "baselines")
    runs = plan_runs(ablation, threads=2)
    cells = list(dict.fromkeys(run.cell for run in runs))
    names = ["metods", "static", "lstm", "hebbian", "neuromodulated", "fast_weights"]
    assert cells == [f"recipe={name}" for name in names]
    assert len(runs) == 6 * 3
    for run in runs[::3]:
        name = run.cell.removeprefix("recipe=")
        assert run.recipe.resolve() == (ROOT / "recipes" / "harlow" / f"{name}.yaml").resolve()
        assert run.resolved["plasticity"]["name"] == name
        assert not any(item.startswith("recipe=") for item in run.overrides)
    static = load_recipe(ROOT / "recipes" / "harlow" / "static.yaml")
    assert runs[3].resolved["plasticity"]["hidden_size"] == static.plasticity.config.hidden_size


def test_shipped_depth_alpha_ablation_is_the_papers_grid(tmp_path: Path) -> None:
    """recipes/ablations/harlow_depth_alpha.yaml: S in {1,2,4} x alpha in {elementwise,none}."""
    path = ABLATIONS / "harlow_depth_alpha.yaml"
    assert load_ablation(path, seeds="1").seeds == [0] and load_ablation(
        path, seeds="4,2"
    ).seeds == [4, 2]
    ablation = load_ablation(path, out=tmp_path / "depth")
    assert ablation.grid == {
        "plasticity.recursion_steps": [1, 2, 4],
        "plasticity.alpha": ["elementwise", "none"],
    }
    runs = plan_runs(ablation, threads=1)
    assert len(runs) == 18 and ablation.seeds == [0, 1, 2]
    assert all(run.recipe.resolve() == HARLOW.resolve() for run in runs)
    assert all(run.episodes == 1000 for run in runs)


@pytest.mark.parametrize("path", sorted(ABLATIONS.glob("*.yaml")), ids=lambda path: path.name)
def test_shipped_ablation_files_plan(path: Path, tmp_path: Path) -> None:
    """Every shipped ablation file is recognised as one, and every run's recipe validates."""
    assert is_ablation_file(path)
    runs = plan_runs(load_ablation(path, out=tmp_path / path.stem), threads=1)
    assert runs and len({run.name for run in runs}) == len(runs)


def test_every_invalid_run_is_reported_before_anything_starts(tmp_path: Path) -> None:
    """Bad grid values are all reported, by cell, and no run directory is created."""
    grid = ["plasticity.recursion_steps=1,99", "plasticity.alpha=elementwise,nope"]
    ablation = ablation_from_grid(HARLOW, grid, 2, TINY, tmp_path / "bad")
    with pytest.raises(AblationError) as error:
        run_ablation(ablation)
    message = str(error.value)
    assert "nothing was started" in message
    assert (
        "recursion_steps=99,alpha=elementwise" in message and "less than or equal to 16" in message
    )
    assert "recursion_steps=1,alpha=nope" in message and "did you mean 'none'" in message
    assert len(error.value.problems) == 4  # each cell once, not once per seed
    assert not (tmp_path / "bad").exists()


def test_ablation_file_problems_are_reported_together(tmp_path: Path) -> None:
    """Unknown keys get a "did you mean"; a file without base or recipe axis is refused."""
    path = tmp_path / "typo.yaml"
    path.write_text("base: x.yaml\ngrid: {seed: [1, 2]}\nsead: 3\n")
    with pytest.raises(AblationError, match="sead: unknown field \\(did you mean 'seeds'\\?\\)"):
        load_ablation(path)
    path.write_text("grid: {plasticity.alpha: [none]}\n")
    with pytest.raises(AblationError, match="base: missing"):
        load_ablation(path)


def test_grid_arguments_and_override_values(tmp_path: Path) -> None:
    """--grid splits at top-level commas; values go back to overrides as the same YAML."""
    ablation = ablation_from_grid(
        HARLOW, ["logger.wandb.tags=[a,b],[c]", "name='1',null"], "0,5", [], tmp_path
    )
    assert ablation.grid == {"logger.wandb.tags": [["a", "b"], ["c"]], "name": ["1", None]}
    assert ablation.seeds == [0, 5]
    for value in ["123", "null", None, 1e-3, "a b", ["x", 1], True, "metods"]:
        assert yaml.safe_load(format_value(value)) == value
    runs = plan_runs(ablation, threads=1)
    assert len({run.cell for run in runs}) == 4
    assert runs[0].resolved["name"] == "1" and runs[2].resolved["name"] is None
    with pytest.raises(AblationError, match="repeats a key"):
        ablation_from_grid(HARLOW, ["seed=1", "seed=2"], 1)
    with pytest.raises(AblationError, match="--seeds"):
        ablation_from_grid(HARLOW, [], "x")


def test_cli_refuses_a_grid_with_an_ablation_file(capsys: pytest.CaptureFixture[str]) -> None:
    """--grid goes with a recipe; an ablation file sets its own (--seeds may replace its seeds)."""
    path = ABLATIONS / "harlow_depth_alpha.yaml"
    assert main(["ablate", str(path), "--grid", "seed=1,2"]) == 2
    assert "is an ablation file" in capsys.readouterr().err


def test_the_lock_refuses_a_second_ablation_on_one_folder(tmp_path: Path) -> None:
    """Two ablations never write into the same output folder at once."""
    with hold_lock(tmp_path / ".lock"):
        with pytest.raises(MetodsError, match="still working"):
            with hold_lock(tmp_path / ".lock", wait_s=0.2):
                pass


# ---------------------------------------------------------------------------------------------
# Statistics and reports on hand-made data
# ---------------------------------------------------------------------------------------------


def test_summary_statistics_on_a_hand_made_table() -> None:
    """Per cell: mean and 95 % CI over finished seeds, their count, and the failed count."""
    rows = [
        {"run": "a-0", "cell": "a", "k": 1, "seed": 0, "status": "done", "mean_reward": 1.0},
        {"run": "a-1", "cell": "a", "k": 1, "seed": 1, "status": "done", "mean_reward": "2.0"},
        {"run": "a-2", "cell": "a", "k": 1, "seed": 2, "status": "done", "mean_reward": 3.0},
        {"run": "b-0", "cell": "b", "k": 2, "seed": 0, "status": "done", "mean_reward": 5.0},
        {"run": "b-1", "cell": "b", "k": 2, "seed": 1, "status": "failed", "mean_reward": ""},
    ]
    for row in rows:
        row["mean_reward_ci95"] = 0.1
        row["accuracy_first"] = "" if row["run"] == "a-0" else 0.5
    first, second = summarise(rows, ["k"])
    assert first["values"] == {"k": 1} and (first["n"], first["failed"]) == (3, 0)
    mean, half_width, count = first["metrics"]["mean_reward"]
    assert mean == pytest.approx(2.0) and count == 3
    assert half_width == pytest.approx(mean_and_ci95([1.0, 2.0, 3.0])[1])
    assert half_width == pytest.approx(4.303 / math.sqrt(3), rel=1e-5)  # t(2), 3 seeds
    assert first["metrics"]["accuracy_first"][2] == 2  # an undefined value is left out
    assert "mean_reward_ci95" not in first["metrics"]
    assert (second["n"], second["failed"]) == (1, 1)
    mean, half_width, count = second["metrics"]["mean_reward"]
    assert mean == 5.0 and math.isnan(half_width) and count == 1
    text = format_summary("demo", ["k"], rows, [], "mean_reward", "metods ablate x", 12.0)
    assert "| k | n | failed | mean_reward | accuracy_first |" in text
    assert "| 1 | 3 | 0 | 2 ± 2.5 | 0.5 ± 0 |" in text and "| 2 | 1 | 1 | 5 ± n/a |" in text
    assert "`metods ablate x`" in text
    rows = [  # spreads of hundreds and of thousandths: plain digits, no exponent
        {"run": f"c-{i}", "cell": "c", "k": 3, "seed": i, "status": "done", "mean_reward": value}
        for i, value in enumerate([300.0, 700.0, 473.0])
    ] + [{"run": "d-0", "cell": "d", "k": 4, "seed": 0, "status": "done", "mean_reward": 1.2e-5}]
    text = format_summary("demo", ["k"], rows, [], "mean_reward", "", 1.0)
    assert "| 3 | 3 | 0 | 491 ± 500 |" in text and "| 4 | 1 | 0 | 0.000012 ± n/a |" in text


def test_paired_differences_from_the_first_cell_seed_by_seed() -> None:
    """Each later cell minus the first, over the seeds both finished, with Student's t
    interval of the differences; one cell alone has no such section."""
    cells = {"a": {0: 1.0, 1: 2.0, 2: 3.0}, "b": {0: 2.0, 1: 4.0, 2: None}, "c": {1: 2.5}}
    rows = [
        {"run": f"{cell}-{seed}", "cell": cell, "k": cell, "seed": seed,
         "status": "failed" if value is None else "done", "mean_reward": value}
        for cell, values in cells.items() for seed, value in values.items()
    ]  # fmt: skip
    b, c = paired_differences(rows, ["mean_reward"])
    assert (b["cell"], b["baseline"], c["cell"]) == ("b", "a", "c")
    mean, half_width, count = b["metrics"]["mean_reward"]  # differences 1 and 2 (seed 2 failed)
    assert (mean, count) == (1.5, 2) and half_width == pytest.approx(12.706 * 0.5)
    assert c["metrics"]["mean_reward"][0] == 0.5 and c["metrics"]["mean_reward"][2] == 1
    text = format_summary("demo", ["k"], rows, [], "mean_reward", "", 1.0)
    assert "## Paired differences from `a`" in text
    assert "| b | 2 | 1.5 ± 6.4 |" in text and "| c | 1 | 0.5 ± n/a |" in text
    alone = [row for row in rows if row["cell"] == "a"]
    assert paired_differences(alone, ["mean_reward"]) == []
    text = format_summary("demo", ["k"], alone, [], "mean_reward", "", 1.0)
    assert "Paired differences" not in text


def test_mean_curve_averages_each_step_over_the_seeds_that_have_it() -> None:
    """Learning curves of seeds of different lengths average step by step."""
    steps, means = mean_curve([[(0, 1.0), (1, 3.0)], [(0, 3.0)]])
    assert steps == [0, 1] and means == [2.0, 3.0]


# ---------------------------------------------------------------------------------------------
# What a run needs, decided from its directory (fake checkpoints, no training)
# ---------------------------------------------------------------------------------------------


def test_inspect_run_decides_from_the_run_directory(tmp_path: Path) -> None:
    """train, restart, resume, evaluate, skip, or conflict, from checkpoints and evaluation."""
    ablation = ablation_from_grid(HARLOW, [], 1, [*TINY, "trainer.max_steps=2"], tmp_path)
    (run,) = plan_runs(ablation, threads=1)
    assert inspect_run(run).action == "train"
    run.run_dir.mkdir(parents=True)
    assert inspect_run(run).action == "restart"
    checkpoints = run.run_dir / "checkpoints"
    checkpoints.mkdir()
    torch.save({"state_dict": {}, "global_step": 1}, checkpoints / "step=000001.ckpt")
    assert inspect_run(run).action == "broken"  # checkpoints without a recipe: not ours to delete
    (checkpoints / "step=000001.ckpt").unlink()
    recipe = load_recipe(run.recipe, run.overrides)
    (run.run_dir / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    assert inspect_run(run).action == "restart"  # a recipe but no checkpoint yet
    torch.save({"state_dict": {}, "global_step": 1}, checkpoints / "step=000001.ckpt")
    decision = inspect_run(run)
    assert decision.action == "resume" and decision.checkpoint == checkpoints / "step=000001.ckpt"
    torch.save({"state_dict": {}, "global_step": 2}, checkpoints / "last.ckpt")
    assert inspect_run(run).action == "evaluate"
    evaluation = run.run_dir / "evaluation.json"
    evaluation.write_text(json.dumps({"episodes": 4, "greedy": False, "overrides": []}))
    assert inspect_run(run).action == "skip"
    evaluation.write_text(json.dumps({"episodes": 8, "greedy": False, "overrides": []}))
    assert inspect_run(run).action == "evaluate"  # evaluated with other settings
    evaluation.write_text('{"episodes": 4, "gre')
    assert inspect_run(run).action == "evaluate"  # cut short while written
    other = load_recipe(run.recipe, [*run.overrides, "plasticity.alpha=none"])
    (run.run_dir / "recipe.yaml").write_text(recipe_to_yaml(other))
    decision = inspect_run(run)
    assert decision.action == "conflict" and "plasticity.alpha: saved 'none'" in str(
        decision.problem
    )


def test_scheduler_restarts_partial_runs_and_records_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With stand-in processes: partial directories are deleted, a failure is recorded with its
    log, the other runs finish, and the reports list both."""

    def fake_stages(run, decision):
        code = (
            "import json, pathlib, sys\n"
            "run_dir, seed = pathlib.Path(sys.argv[1]), int(sys.argv[2])\n"
            "print('training', run_dir.name, flush=True)\n"
            "if seed == 1:\n"
            "    print('error: boom', file=sys.stderr); sys.exit(3)\n"
            "run_dir.mkdir(parents=True, exist_ok=True)\n"
            "summary = {'mean_reward': float(seed), 'mean_reward_ci95': 0.5, 'episodes': 4,\n"
            "           'greedy': False, 'overrides': [], 'main_metric': 'episode_reward'}\n"
            "(run_dir / 'evaluation.json').write_text(json.dumps(summary))\n"
        )
        return [("train", [sys.executable, "-c", code, str(run.run_dir), str(run.seed)])]

    monkeypatch.setattr(jobs_module, "_stages", fake_stages)
    ablation = ablation_from_grid(HARLOW, [], 3, TINY, tmp_path / "fake")
    partial = tmp_path / "fake" / "runs" / "metods-seed2"
    partial.mkdir(parents=True)
    (partial / "junk.txt").write_text("left by a killed run")
    result = run_ablation(ablation, jobs=2, command="metods ablate fake", echo=lambda _: None)
    statuses = {o.run.seed: (o.status, o.action) for o in result.outcomes}
    assert statuses == {0: ("done", "trained"), 1: ("failed", "trained"), 2: ("done", "restarted")}
    assert not (partial / "junk.txt").exists()
    failed = result.failed[0]
    assert "train exited with status 3: error: boom" in str(failed.error)
    assert "training metods-seed1" in failed.log_tail
    log = (tmp_path / "fake" / "runs" / "metods-seed1.log").read_text()
    assert "error: boom" in log
    rows = read_rows(tmp_path / "fake" / "results.csv")
    assert [row["status"] for row in rows] == ["done", "failed", "done"]
    assert rows[2]["mean_reward"] == "2.0" and float(rows[0]["wall_time_s"]) > 0
    summary = (tmp_path / "fake" / "summary.md").read_text()
    assert "| 2 | 1 | 1 ± 13 |" in summary  # seeds 0 and 2: mean 1, CI t(1) * std / sqrt(2)
    assert "## Failed runs" in summary and "error: boom" in summary
    assert (tmp_path / "fake" / "ablation.png").is_file()
    plan = json.loads((tmp_path / "fake" / "ablation.json").read_text())
    assert [run["action"] for run in plan["runs"]] == ["train", "train", "restart"]


# ---------------------------------------------------------------------------------------------
# Real runs: tiny budgets, real `metods train` / `metods evaluate` processes
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nan_grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ablation, AblationResult]]:
    """A 2-run ablation: plain A2C, and a meta-optimizer whose loss turns NaN at step 3."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(HELPERS))
        patch.setenv("PYTHONPATH", str(HELPERS))
        out = tmp_path_factory.mktemp("ablation") / "nan_grid"
        grid = [f"meta_optimizer.name=a2c,{NAN_RULE}"]
        ablation = ablation_from_grid(HARLOW, grid, 1, [*TINY, "trainer.max_steps=3"], out)
        result = run_ablation(ablation, jobs=2, command="metods ablate test", echo=lambda _: None)
        yield ablation, result


def test_a_failing_run_is_reported_and_the_others_finish(nan_grid) -> None:
    """A run that exits non-zero is recorded with its error and log; the other run finishes."""
    ablation, result = nan_grid
    runs = by_name(result)
    plain, nan = runs["name=a2c"], runs["name=tiny_plugins-NaNAfterTwoSteps"]
    assert plain.status == "done" and plain.evaluation["episodes"] == 4
    assert nan.status == "failed" and "train exited with status 2" in str(nan.error)
    assert "became non-finite" in str(nan.error)
    summary = (ablation.out / "summary.md").read_text()
    assert (
        "## Failed runs" in summary and nan.run.name in summary and "became non-finite" in summary
    )
    rows = read_rows(ablation.out / "results.csv")
    assert [row["status"] for row in rows] == ["done", "failed"]


def test_reports_and_run_directories(nan_grid) -> None:
    """results.csv, summary.md, ablation.png and ablation.json; runs share the W&B group."""
    ablation, result = nan_grid
    out = ablation.out
    rows = read_rows(out / "results.csv")
    assert list(rows[0])[:8] == [
        "run",
        "cell",
        "meta_optimizer.name",
        "seed",
        "status",
        "action",
        "wall_time_s",
        "error",
    ]
    assert {"mean_reward", "mean_reward_ci95", "accuracy_first"} <= set(rows[0])
    assert "accuracy_by_presentation" not in rows[0]  # a curve, not a scalar
    assert float(rows[0]["wall_time_s"]) > 0 and rows[0]["mean_reward"] != ""
    summary = (out / "summary.md").read_text()
    assert "| meta_optimizer.name | n | failed | mean_reward |" in summary
    assert "| a2c | 1 | 0 |" in summary and f"| {NAN_RULE} | 0 | 1 | n/a |" in summary
    assert (out / "ablation.png").stat().st_size > 0
    plan = json.loads((out / "ablation.json").read_text())
    assert plan["name"] == "nan_grid" and len(plan["runs"]) == 2
    for outcome in result.outcomes:
        saved = yaml.safe_load((outcome.run.run_dir / "recipe.yaml").read_text())
        assert saved["logger"]["wandb"]["group"] == "nan_grid"
        assert saved["trainer"]["num_threads"] == threads_per_job(2)
        assert (out / "runs" / f"{outcome.run.name}.log").is_file()


def test_rerun_skips_finished_runs_and_completes_the_others(
    nan_grid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-running: a trained run with a damaged evaluation.json is re-evaluated, not retrained;
    the run that stopped after two checkpoints resumes from them and finishes."""
    monkeypatch.syspath_prepend(str(HELPERS))
    monkeypatch.setenv("PYTHONPATH", str(HELPERS))
    ablation, first = nan_grid
    out = tmp_path / "copy" / ablation.out.name
    shutil.copytree(ablation.out, out)
    plain, nan = (o.run.name for o in first.outcomes)
    evaluation = out / "runs" / plain / "evaluation.json"
    evaluation.write_text(evaluation.read_text()[:20])
    checkpoint = out / "runs" / plain / "checkpoints" / "last.ckpt"
    trained_at = checkpoint.stat().st_mtime_ns
    again = dataclasses.replace(ablation, out=out)
    result = run_ablation(again, jobs=2, echo=lambda _: None)
    actions = {o.run.name: (o.status, o.action) for o in result.outcomes}
    assert actions == {plain: ("done", "evaluated"), nan: ("done", "resumed")}
    assert checkpoint.stat().st_mtime_ns == trained_at
    assert json.loads(evaluation.read_text())["episodes"] == 4
    resumed = out / "runs" / nan
    assert read_checkpoint(resumed / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert (resumed / "logs" / "version_1").is_dir()
    assert [row["status"] for row in read_rows(out / "results.csv")] == ["done", "done"]
    assert "## Failed runs" not in (out / "summary.md").read_text()


@pytest.mark.slow
def test_a_killed_ablation_resumes_without_redoing_finished_runs(tmp_path: Path) -> None:
    """SIGKILL the whole `metods ablate` process group mid-run; the same command finishes it,
    keeping the finished run and resuming the interrupted one from its checkpoint."""
    out = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "metods_core.cli",
        "ablate",
        str(HARLOW),
        *TINY,
        "trainer.max_steps=10",
        "trainer.checkpoint_every_n_steps=2",
        "--grid",
        "plasticity.recursion_steps=1,2",
        "--jobs",
        "1",
        "--out",
        str(out),
    ]
    first, second = (
        out / "runs" / "recursion_steps=1-seed0",
        out / "runs" / "recursion_steps=2-seed0",
    )
    process = subprocess.Popen(
        command, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL
    )
    deadline = time.time() + 400
    # last.ckpt appears (atomically) after step=000002.ckpt: waiting for the step file alone
    # raced with the link that makes last.ckpt (measured: one CI run killed in between).
    while not (second / "checkpoints" / "last.ckpt").exists():
        assert time.time() < deadline and process.poll() is None, "the ablation never got there"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (first / "evaluation.json").is_file()
    assert read_checkpoint(second / "checkpoints" / "last.ckpt")["global_step"] < 10
    finished = {
        path: path.stat().st_mtime_ns
        for path in [first / "checkpoints" / "last.ckpt", first / "evaluation.json"]
    }
    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=500)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in finished.items())
    assert read_checkpoint(second / "checkpoints" / "last.ckpt")["global_step"] == 10
    assert (second / "logs" / "version_1").is_dir()  # resumed, not started again
    rows = read_rows(out / "results.csv")
    assert [(row["status"], row["action"]) for row in rows] == [
        ("done", "skipped"),
        ("done", "resumed"),
    ]
