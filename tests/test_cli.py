"""The `metods` command: exit codes, messages, and fast paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from metods_core.cli import format_table, main
from metods_core.errors import MetodsError
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


def fake_module(monkeypatch, name: str, **functions) -> list:
    """Stand in for a module written elsewhere (training, evaluation), recording its calls."""
    calls: list = []
    module = types.ModuleType(name)
    for attr, result in functions.items():

        def record(*args, _attr=attr, _result=result):
            calls.append((_attr, args))
            if isinstance(_result, Exception):
                raise _result
            return _result

        setattr(module, attr, record)
    monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_train_and_resume_hand_over_recipe_and_overrides(recipe, tmp_path, monkeypatch, capsys):
    """train loads the recipe with overrides; --resume passes the directory and overrides."""
    run = tmp_path / "run"
    calls = fake_module(monkeypatch, "metods_core.training", train_recipe=run, resume_run=run)
    assert main(["train", str(recipe), "trainer.max_steps=2", "--run-dir", str(run)]) == 0
    assert main(["train", "--resume", str(run), "trainer.max_steps=4"]) == 0
    (_, (trained, run_dir)), resumed = calls
    assert trained.trainer.max_steps == 2 and run_dir == run
    assert resumed == ("resume_run", (run, ["trainer.max_steps=4"]))
    assert f"run directory: {run}" in capsys.readouterr().out


def test_evaluate_passes_flags_and_prints_json(tmp_path, monkeypatch, capsys):
    """evaluate forwards --episodes/--override/--greedy and prints the result."""
    calls = fake_module(monkeypatch, "metods_core.evaluation", evaluate_run={"reward": 0.5})
    run = tmp_path / "run"
    args = ["evaluate", str(run), "--episodes", "8", "--override", "seed=2", "--json", "--greedy"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == {"reward": 0.5}
    assert main(["evaluate", str(run)]) == 0
    assert capsys.readouterr().out == "reward  0.5\n"
    assert calls == [
        ("evaluate_run", (run, 8, ["seed=2"], True)),
        ("evaluate_run", (run, None, [], None)),
    ]


def test_metods_error_from_a_command_exits_2(tmp_path, monkeypatch, capsys):
    """Any MetodsError raised by a command becomes one stderr line and exit status 2."""
    fake_module(monkeypatch, "metods_core.evaluation", evaluate_run=MetodsError("no checkpoint"))
    assert main(["evaluate", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: no checkpoint\n"
