"""Shipped baselines are small deltas on their family's base and resolve to base + delta."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from metods_core.ablation import is_ablation_file
from metods_core.recipe import COMPONENTS, load_recipe, load_recipe_dict, recipe_to_dict
from metods_core.registry import load_plugin

ROOT = Path(__file__).resolve().parents[1]
BASES = {"recipes/harlow/metods.yaml", "recipes/maze/metods.yaml"}
BASES |= {"recipes/mujoco/cheetah_dir_metods.yaml", "recipes/mujoco/ant_dir_metods.yaml"}
BASES |= {"recipes/metaworld/ml1_reach_metods.yaml"}
RECIPES = sorted(
    str(p.relative_to(ROOT))
    for p in (ROOT / "recipes").rglob("*.yaml")
    if not is_ablation_file(p) and str(p.relative_to(ROOT)) not in BASES
)


def test_every_baseline_is_a_delta() -> None:
    """Each shipped recipe but the family bases names a base in `defaults:`."""
    assert RECIPES
    for name in RECIPES:
        raw = yaml.safe_load((ROOT / name).read_text())
        assert "defaults" in raw, f"{name} is a full copy, not a delta on its family's base"


def expected(raw: dict[str, Any], base: dict[str, Any], written: dict[str, Any]) -> dict[str, Any]:
    """Compute base + delta by hand: a component section whose `name` changes is the delta's
    keys, plus the keys the base *writes* (``written``, defaults not filled) that the new plugin
    accepts, on the new plugin's defaults; any other section is the base's, updated key by key."""
    out = {key: value for key, value in base.items() if key != "source"}
    for key, value in raw.items():
        if key == "defaults":
            continue
        if key in COMPONENTS and value.get("name", base[key]["name"]) != base[key]["name"]:
            cls = load_plugin(key, value["name"])
            kept = {k: v for k, v in written[key].items() if k in cls.Config.model_fields}
            config = {k: v for k, v in {**kept, **value}.items() if k != "name"}
            out[key] = {"name": value["name"], **cls.Config(**config).model_dump(mode="json")}
        elif isinstance(value, dict):
            out[key] = {**base[key], **value}
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("name", RECIPES)
def test_a_delta_resolves_to_its_base_plus_its_own_keys(name: str) -> None:
    """The resolved delta equals its base's resolved form with the delta's sections applied."""
    raw = yaml.safe_load((ROOT / name).read_text())
    (base_name,) = raw["defaults"]
    base_path = (ROOT / name).parent / base_name
    base = recipe_to_dict(load_recipe(base_path))
    got = recipe_to_dict(load_recipe(ROOT / name))
    assert {k: v for k, v in got.items() if k != "source"} == expected(
        raw, base, load_recipe_dict(base_path)
    )
