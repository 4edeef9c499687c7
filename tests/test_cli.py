"""The `metods` command: exit codes, messages, and fast paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from metods_core.cli import main
from metods_core.commands import format_table
from metods_core.recipe import load_recipe

METODS_CLI = Path(sys.executable).parent / "metods"
RECIPE = """\
seed: 3
task: {name: "tiny_plugins:TinyTasks"}
plasticity: {name: metods, recursion_steps: 2}
readout: {name: "tiny_plugins:TinyReadout"}
meta_optimizer: {name: "tiny_plugins:TinyOptimizer"}
"""


@pytest.fixture
def recipe(tmp_path: Path, tiny_plugins: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return path


def test_validate_ok(recipe, capsys):
    """A valid recipe prints ok and exits 0."""
    assert main(["validate", str(recipe), "trainer.max_steps=2"]) == 0
    assert capsys.readouterr().out == f"ok: {recipe}\n"


def test_validate_reports_all_problems_with_exit_2(recipe, capsys):
    """A bad recipe prints the whole report on stderr and exits 2."""
    code = main(
        ["validate", str(recipe), "plasticity.recursion_step=3", "seed=x", "readout.name=nope"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "has 3 problems" in err
    assert "plasticity.recursion_step: unknown field (did you mean 'recursion_steps'?)" in err
    assert "readout.name: unknown readout plugin 'nope'" in err


def test_validate_subprocess_has_no_traceback(recipe, tiny_plugins):
    """The installed command exits 2 on a bad recipe and never shows a traceback."""
    env = {**os.environ, "PYTHONPATH": tiny_plugins}
    done = subprocess.run(
        [
            str(METODS_CLI),
            "validate",
            str(recipe),
            "trainer.max_steps=-4",
            "plasticity.sigma=tanhh",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert "trainer.max_steps: expected greater than 0, got -4" in done.stderr
    assert "did you mean 'tanh'?" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_missing_recipe_file_exits_2(tmp_path, capsys):
    """A path that does not exist is a user error, not a crash."""
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_show_prints_every_default_and_loads_back(recipe, tmp_path, capsys):
    """`metods show` output is YAML with all defaults that loads back into the same recipe."""
    assert main(["show", str(recipe), "trainer.max_steps=7"]) == 0
    out = capsys.readouterr().out
    assert "precision: 32-true" in out and "write: vanilla" in out and "max_steps: 7" in out
    shown = tmp_path / "shown.yaml"
    shown.write_text(out)
    assert load_recipe(shown) == load_recipe(recipe, ["trainer.max_steps=7"])


def test_plugins_lists_groups(capsys):
    """`metods plugins` prints every group with name, distribution, version and summary."""
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for group in ("metods.plasticity", "metods.readout", "metods.tasks", "metods.meta_optimizers"):
        assert group in out
    line = next(line for line in out.splitlines() if line.strip().startswith("metods "))
    assert "metods-plugins" in line and "0.1.0" in line and "MetODS" in line


def test_train_arguments_are_checked(capsys):
    """train needs a recipe or --resume, not both --resume and --run-dir."""
    with pytest.raises(SystemExit) as caught:
        main(["train"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit):
        main(["train", "--resume", "runs/x", "--run-dir", "runs/y"])
    assert "--run-dir" in capsys.readouterr().err


def test_help_does_not_import_heavy_modules():
    """Importing the CLI (as `metods --help` does) loads neither torch, lightning nor wandb."""
    code = (
        "import sys, metods_core.cli\n"
        "heavy = {'torch', 'lightning', 'wandb', 'omegaconf', 'pydantic'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_format_table_flattens_nested_results():
    """Evaluation results print as aligned dotted keys with compact numbers."""
    table = format_table({"episode_reward": {"mean": 0.123456, "ci95": 0.01}, "curve": [0.5, 1.0]})
    assert table.splitlines() == [
        "episode_reward.mean  0.1235",
        "episode_reward.ci95  0.01",
        "curve                [0.5, 1]",
    ]


def test_evaluate_on_a_missing_run_exits_2(tmp_path, capsys):
    """A directory that is not a run gives one stderr message and exit status 2."""
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a metods run directory" in err
