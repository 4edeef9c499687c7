"""`metods curve`: a run's training log summarised over windows of outer steps."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from metods_core.errors import MetodsError
from metods_core.recipe import load_recipe
from metods_core.run_folder import RunFolder
from metods_core.training import train_recipe
from metods_core.training_log import (
    format_window_markdown,
    log_columns,
    read_training_log,
    window_table,
)

ROOT = Path(__file__).resolve().parents[1]


def _write_log(run: Path, version: int, rows: list[dict[str, object]]) -> None:
    """Write one (re)start's ``metrics.csv`` in the CSV logger's layout."""
    path = RunFolder(run).logs / f"version_{version}" / "metrics.csv"
    path.parent.mkdir(parents=True)
    columns = ["epoch", "step", *sorted({key for row in rows for key in row} - {"step"})]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({"epoch": 0, **row})


@pytest.fixture
def resumed_run(tmp_path: Path) -> Path:
    """Steps 0-5 logged, then a resume from step 4 that logs steps 4-6 again with new values."""
    run = tmp_path / "resumed"
    first = [{"step": s, "train/episode_reward": float(s), "train/success": 0.5} for s in range(6)]
    _write_log(run, 0, first)
    again = [{"step": s, "train/episode_reward": 10.0 * s} for s in range(4, 7)]
    again[0]["train/success"] = "nan"
    _write_log(run, 1, again)
    return run


def test_later_logs_win_and_windows_are_named_from_one(resumed_run: Path) -> None:
    """Repeated steps take the resume's values; window k spans outer steps kN+1 to (k+1)N."""
    assert read_training_log(resumed_run) == [
        (0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)
    ]  # fmt: skip
    table = window_table([resumed_run], ["episode_reward", "train/success"], window=3)
    assert table["headers"] == ["episode_reward", "success"]
    assert [row["steps"] for row in table["rows"]] == ["1-3", "4-6", "7"]
    assert [row["values"][0] for row in table["rows"]] == [1.0, (3 + 40 + 50) / 3, 60.0]
    # step 4's success became NaN on resume: left out and not counted; the resume logged no
    # success at step 5, so the first log's stays; step 6 has none
    assert [row["values"][1] for row in table["rows"]] == [0.5, 0.5, None]
    assert [row["n"][1] for row in table["rows"]] == [3, 2, 0]


def test_min_max_and_several_runs(resumed_run: Path, tmp_path: Path) -> None:
    """``stat`` picks the window's extreme; several runs get one column each, named by run."""
    other = tmp_path / "other"
    _write_log(other, 0, [{"step": s, "train/episode_reward": -float(s)} for s in range(2)])
    table = window_table([resumed_run, other], ["episode_reward"], window=4, stat="min")
    assert table["headers"] == ["resumed episode_reward", "other episode_reward"]
    assert table["rows"][0]["values"] == [0.0, -1.0]
    assert table["rows"][1]["values"] == [40.0, None]
    markdown = format_window_markdown(table)
    assert markdown.splitlines()[0] == (
        "| outer steps (min over windows of 4) | resumed episode_reward | other episode_reward |"
    )
    assert markdown.splitlines()[3] == "| 5–7 | 40 |  |"


def test_runs_of_the_same_name_are_told_apart(resumed_run: Path, tmp_path: Path) -> None:
    """Two folders named alike are labelled by their whole paths."""
    twin = tmp_path / "elsewhere" / "resumed"
    _write_log(twin, 0, [{"step": 0, "train/episode_reward": 1.0}])
    headers = window_table([resumed_run, twin], ["episode_reward"], window=2)["headers"]
    assert headers == [f"{resumed_run} episode_reward", f"{twin} episode_reward"]


def test_a_column_one_run_does_not_log_is_empty_there(resumed_run: Path, tmp_path: Path) -> None:
    """Runs compared side by side need not log the same columns (a test curve turned on in one
    of them): the run without it gets empty cells; a name no run logs is still refused."""
    other = tmp_path / "other"
    _write_log(
        other, 0, [{"step": s, "train/episode_reward": 1.0, "test/success": 0.5} for s in range(2)]
    )
    table = window_table([resumed_run, other], ["episode_reward", "test/success"], window=4)
    assert table["headers"] == [
        "resumed episode_reward", "resumed test/success",
        "other episode_reward", "other test/success",
    ]  # fmt: skip
    first = table["rows"][0]
    assert first["values"][1] is None and first["n"][1] == 0
    assert first["values"][3] == 0.5 and first["n"][3] == 2
    with pytest.raises(MetodsError, match=r"none of .*resumed, .*other logs a column 'test/suc"):
        window_table([resumed_run, other], ["test/sucess"], window=4)


def test_bad_input_says_what_is_wrong(resumed_run: Path, tmp_path: Path) -> None:
    """An unknown column lists the logged ones; a folder without logs and a window of 0 fail."""
    with pytest.raises(MetodsError, match=r"no column 'sucess'.*episode_reward, success"):
        window_table([resumed_run], ["sucess"], window=2)
    with pytest.raises(MetodsError, match="has no training log"):
        window_table([tmp_path / "empty"], ["episode_reward"], window=2)
    with pytest.raises(MetodsError, match="at least 1"):
        window_table([resumed_run], ["episode_reward"], window=0)


def test_cli_curve_on_a_trained_run(tmp_path: Path) -> None:
    """On a real Harlow run, `metods curve --json` gives the logged values' window means, and a
    misspelt column exits 2 with one line."""
    recipe = load_recipe(
        ROOT / "recipes" / "harlow" / "metods.yaml",
        [
            "data.batch_tasks=4",
            "plasticity.recursion_steps=1",
            "trainer.max_steps=3",
            "trainer.log_every_n_steps=1",
            "logger.wandb.mode=disabled",
            "trainer.compile=false",
        ],
    )
    run = train_recipe(recipe, tmp_path / "run")
    assert {"train/episode_reward", "train/rule/memory_decay"} <= set(log_columns(run))
    command = [sys.executable, "-m", "metods_core.cli", "curve", str(run)]
    result = subprocess.run(
        [*command, "--column", "rule/memory_decay", "--window", "2", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    table = json.loads(result.stdout)
    logged = [value for _, value in read_training_log(run, "train/rule/memory_decay")]
    assert len(logged) == 3
    assert [row["steps"] for row in table["rows"]] == ["1-2", "3"]
    assert table["rows"][0]["values"][0] == pytest.approx((logged[0] + logged[1]) / 2)
    assert math.isclose(table["rows"][1]["values"][0], logged[2])
    failed = subprocess.run(
        [*command, "--column", "rewrd"], capture_output=True, text=True, check=False
    )
    assert failed.returncode == 2
    assert failed.stderr.startswith("error: ") and "Traceback" not in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
