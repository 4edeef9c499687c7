"""Whole recipes: load and validate a file, and write a recipe back as plain data or YAML."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from metods_core.recipe.loading import load_recipe_dict
from metods_core.recipe.schema import ComponentSpec, Recipe
from metods_core.recipe.validation import validate_recipe


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Load, compose, override, resolve and validate the recipe at ``path``."""
    return validate_recipe(load_recipe_dict(path, overrides), source=path)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Return ``recipe`` as plain data that ``validate_recipe`` turns back into an equal recipe."""
    data: dict[str, Any] = {}
    for name in Recipe.model_fields:
        value = getattr(recipe, name)
        if isinstance(value, ComponentSpec):
            data[name] = {"name": value.name, **value.config.model_dump()}
        elif isinstance(value, BaseModel):
            data[name] = value.model_dump()
        else:
            data[name] = value
    return _plain(data)


def recipe_to_yaml(recipe: Recipe) -> str:
    """Return ``recipe`` as YAML text that ``load_recipe`` reads back into an equal recipe."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=False)


def _plain(value: Any) -> Any:
    """Make ``value`` YAML-safe and interpolation-safe."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str) and "${" in value:
        return value.replace("${", "\\${")  # a literal "${", not an interpolation
    return value
