"""The `metods` command line: the recipe is the first positional, overrides go anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metods_core.cli import build_parser, main, parse_args
from metods_core.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
HARLOW = ROOT / "recipes" / "harlow" / "metods.yaml"
TINY = [
    "data.batch_tasks=2",
    "logger.wandb.mode=disabled",
    "trainer.compile=false",
    "trainer.num_threads=1",
    "evaluation.episodes=2",
    "evaluation.batch_tasks=2",
]


def test_overrides_may_follow_options() -> None:
    """`ablate R --grid ... --out D key=value` and `train R --run-dir D key=value` parse."""
    args = parse_args(
        build_parser(),
        ["ablate", "r.yaml", "a=1", "--grid", "k=1,2", "--out", "D", "trainer.max_steps=5"],
    )
    assert (args.file, args.overrides, args.grid) == (
        Path("r.yaml"),
        ["a=1", "trainer.max_steps=5"],
        ["k=1,2"],
    )
    args = parse_args(build_parser(), ["train", "r.yaml", "--run-dir", "D", "seed=2"])
    assert (args.recipe, args.overrides, args.run_dir) == ("r.yaml", ["seed=2"], Path("D"))


def test_a_recipe_path_with_an_equals_sign_is_the_recipe(tmp_path: Path, capsys) -> None:
    """The recipe an ablation run writes (`runs/recursion_steps=1-seed0/recipe.yaml`) is
    accepted back by `validate`, `show` and `train`."""
    folder = tmp_path / "runs" / "recursion_steps=1-seed0"
    folder.mkdir(parents=True)
    recipe = folder / "recipe.yaml"
    recipe.write_text(HARLOW.read_text())
    assert main(["validate", str(recipe), "trainer.max_steps=1"]) == 0
    run = tmp_path / "again"
    code = main(["train", str(recipe), "--run-dir", str(run), *TINY, "trainer.max_steps=1"])
    assert code == 0, capsys.readouterr().err
    assert load_recipe(run / "recipe.yaml").trainer.max_steps == 1


def test_resume_takes_overrides_only(capsys) -> None:
    """With --resume the recipe is the run's: a recipe file on the line is refused."""
    with pytest.raises(SystemExit):
        main(["train", "--resume", "runs/x", "recipes/harlow/metods.yaml"])
    assert "give overrides only" in capsys.readouterr().err
    args = parse_args(build_parser(), ["train", "--resume", "runs/x", "seed=1", "a=2"])
    assert args.recipe == "seed=1" and args.overrides == ["a=2"]  # joined by _check_train_args


@pytest.mark.slow
def test_ablate_with_overrides_after_the_options(tmp_path: Path, capsys) -> None:
    """`metods ablate R --grid ... --out D trainer.max_steps=2` trains both cells; a run's
    recipe.yaml then trains again through `metods train`."""
    out = tmp_path / "abl"
    argv = ["ablate", str(HARLOW), "--grid", "plasticity.recursion_steps=1,2", "--out", str(out)]
    assert main([*argv, *TINY, "trainer.max_steps=2"]) == 0, capsys.readouterr().err
    summary = json.loads((out / "ablation.json").read_text())
    assert len(summary["runs"]) == 2
    recipe = out / "runs" / "recursion_steps=1-seed0" / "recipe.yaml"
    assert load_recipe(recipe).trainer.max_steps == 2
    assert (
        main(["train", str(recipe), "trainer.max_steps=1", "--run-dir", str(tmp_path / "r")]) == 0
    )
