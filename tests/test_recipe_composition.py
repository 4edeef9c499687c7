"""Composition: `defaults:`, overrides and ablation grids switch a component by one rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from metods_core.ablation import ablation_from_grid, plan_runs
from metods_core.recipe import RecipeError, load_recipe, load_recipe_dict, recipe_to_dict
from metods_core.training import train_recipe

ROOT = Path(__file__).resolve().parents[1]
HARLOW = ROOT / "recipes" / "harlow" / "metods.yaml"
SWITCH = "plasticity: {name: hebbian}\n"
TINY = ["data.batch_tasks=2", "trainer.max_steps=2", "trainer.compile=false"]
TINY += ["logger.wandb.mode=disabled", "trainer.num_threads=1"]


def delta(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "delta.yaml"
    path.write_text(f"defaults: [{HARLOW}]\n{body}")
    return path


def test_defaults_switch_a_component_as_an_override_does(tmp_path: Path) -> None:
    """`defaults: [metods.yaml]` + `plasticity: {name: hebbian}` resolves like the override."""
    composed = load_recipe_dict(delta(tmp_path, SWITCH))
    overridden = load_recipe_dict(HARLOW, ["plasticity.name=hebbian"])
    assert composed == overridden
    assert composed["plasticity"] == {"name": "hebbian", "alpha": "elementwise"}
    assert load_recipe(delta(tmp_path, SWITCH)).plasticity.cls.__name__ == "HebbianRule"


def test_an_ablation_grid_switches_a_component_as_an_override_does(tmp_path: Path) -> None:
    """A grid value `plasticity.name=hebbian` gives the recipe the `defaults:` delta gives."""
    ablation = ablation_from_grid(HARLOW, ["plasticity.name=hebbian"], 1, [], tmp_path / "abl")
    (run,) = plan_runs(ablation, threads=1)
    composed = recipe_to_dict(load_recipe(delta(tmp_path, SWITCH), run.overrides))
    assert run.resolved.pop("source") == str(HARLOW)  # only where each was read from differs
    assert run.resolved == _no_source(composed)


def _no_source(data: dict) -> dict:
    return {key: value for key, value in data.items() if key != "source"}


def test_the_delta_sets_the_new_plugins_keys_and_the_same_name_merges(tmp_path: Path) -> None:
    """Keys under the switched section are the new plugin's; an unchanged name merges as usual."""
    switched = load_recipe(delta(tmp_path, "plasticity: {name: hebbian, hidden_size: 16}\n"))
    assert switched.plasticity.config.hidden_size == 16
    merged = load_recipe(delta(tmp_path, "plasticity: {name: metods, recursion_steps: 2}\n"))
    assert merged.plasticity.config.recursion_steps == 2
    assert merged.plasticity.config.initial_weights == "learned"  # kept from the base


def test_a_later_default_switches_an_earlier_one(tmp_path: Path) -> None:
    """Several defaults fold left to right through the same switching rule."""
    (tmp_path / "rule.yaml").write_text("plasticity: {name: hebbian, rule: oja}\n")
    path = tmp_path / "top.yaml"
    path.write_text(f"defaults: [{HARLOW}, rule.yaml]\n")
    assert load_recipe_dict(path)["plasticity"] == {
        "name": "hebbian",
        "alpha": "elementwise",
        "rule": "oja",
    }


def test_the_old_plugins_key_in_the_delta_is_still_an_error(tmp_path: Path) -> None:
    """Switching drops the base's keys, not the delta's own: a wrong key is reported."""
    with pytest.raises(RecipeError, match="plasticity.recursion_steps"):
        load_recipe(delta(tmp_path, "plasticity: {name: hebbian, recursion_steps: 2}\n"))


def test_the_switched_delta_trains(tmp_path: Path) -> None:
    """The composed recipe trains two outer steps through the real Trainer."""
    run_dir = train_recipe(load_recipe(delta(tmp_path, SWITCH), TINY), tmp_path / "run")
    assert (run_dir / "recipe.yaml").is_file()
