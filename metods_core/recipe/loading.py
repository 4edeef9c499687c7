"""Load recipe files: ``defaults`` composition, overrides, component switching, interpolation.

See the package docstring of ``metods_core.recipe`` for the rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from metods_core.recipe.schema import COMPONENTS, Problem, RecipeError
from metods_core.registry import PluginError, load_plugin


def load_recipe_dict(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Load ``path`` with its defaults and ``overrides``; return resolved plain data.

    Raises:
        RecipeError: missing file, YAML error, bad ``defaults``, bad override, bad interpolation.
    """
    config = _compose(Path(path), (), source=path)
    config = _apply_overrides(config, overrides, source=path)
    _refuse_environment(config, source=path)
    return _resolve(config, source=path)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (with component switching) to plain recipe data."""
    config = _apply_overrides(OmegaConf.create(dict(data)), overrides, source=None)
    _refuse_environment(config, source=None)
    return _resolve(config, source=None)


def _compose(path: Path, chain: tuple[Path, ...], source: str | Path) -> DictConfig:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise RecipeError([Problem("defaults", f"defaults form a cycle: {cycle}")], source)
    if not resolved.is_file():
        where = f" (listed in the defaults of {chain[-1]})" if chain else ""
        raise RecipeError([Problem("", f"file not found: {path}{where}")], source)
    try:
        loaded = OmegaConf.load(resolved)
    except yaml.YAMLError as exc:
        raise RecipeError([Problem("", f"{path}: {_yaml_error(exc)}")], source) from None
    except (OSError, UnicodeDecodeError, OmegaConfBaseException) as exc:
        raise RecipeError([Problem("", f"{path}: cannot read: {exc}")], source) from None
    if not isinstance(loaded, DictConfig):
        raise RecipeError(
            [Problem("", f"{path}: a recipe must be a mapping of sections, got a list")], source
        )
    defaults = loaded.pop("defaults", [])
    if isinstance(defaults, str):
        defaults = [defaults]
    if not isinstance(defaults, ListConfig | list) or not all(
        isinstance(item, str) for item in defaults
    ):
        message = f"{path}: expected a list of recipe paths, got {defaults!r}"
        raise RecipeError([Problem("defaults", message)], source)
    bases = [_compose(resolved.parent / item, (*chain, resolved), source) for item in defaults]
    if not bases:
        return loaded
    merged = bases[0]
    for layer in [*bases[1:], loaded]:
        merged = merge_layer(merged, layer, f"{path}: cannot merge it onto its defaults", source)
    return merged


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return "YAML syntax error: " + " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    return f"YAML syntax error at {where}: {exc.problem}" + (f" ({context})" if context else "")  # type: ignore[attr-defined]


def _apply_overrides(
    config: DictConfig, overrides: Sequence[str], source: str | Path | None
) -> DictConfig:
    problems = [
        Problem("", f"override {item!r} is not of the form key=value")
        for item in overrides
        if "=" not in item or item.startswith(("+", "~", "="))
    ]
    if problems:
        raise RecipeError(problems, source)
    for item in overrides:
        try:
            OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            reason = " ".join(str(exc).split())
            problems.append(
                Problem("", f"override {item!r} has a value that is not YAML: {reason}")
            )
    if problems:
        raise RecipeError(problems, source)
    dotlist = OmegaConf.from_dotlist(list(overrides))
    return merge_layer(config, dotlist, "cannot apply the overrides", source)


def merge_layer(
    base: DictConfig, layer: DictConfig, what: str, source: str | Path | None
) -> DictConfig:
    """Merge ``layer`` onto ``base``, switching components: the one rule of every layer.

    A recipe onto its ``defaults``, command-line overrides and an ablation grid's values (which
    are overrides) all go through here. Where ``layer`` names another plugin for a component
    than ``base`` does, ``base``'s section is first cut down to ``name`` plus the keys the new
    plugin's ``Config`` accepts, so the old plugin's own keys cannot leak into the new one.
    """
    base = base.copy()
    for kind in COMPONENTS:
        new_name = OmegaConf.select(layer, f"{kind}.name", default=None)
        old_name = OmegaConf.select(
            base, f"{kind}.name", default=None, throw_on_resolution_failure=False
        )
        if not isinstance(new_name, str) or new_name == old_name:
            continue
        old = base.get(kind)
        raw = OmegaConf.to_container(old, resolve=False) if isinstance(old, DictConfig) else {}
        accepted = _accepted_keys(kind, new_name)
        kept = {key: value for key, value in raw.items() if key in accepted}  # type: ignore[union-attr]
        base[kind] = {"name": new_name, **kept}
    return _merge([base, layer], what, source)


def _merge(configs: list[DictConfig], what: str, source: str | Path | None) -> DictConfig:
    try:
        merged = OmegaConf.merge(*configs)
    except (OmegaConfBaseException, TypeError, ValueError) as exc:
        message = str(getattr(exc, "msg", exc)).splitlines()[0]
        key = getattr(exc, "full_key", None) or ""
        raise RecipeError([Problem(key, f"{what}: {message}")], source) from None
    assert isinstance(merged, DictConfig)
    return merged


def _accepted_keys(kind: str, name: str) -> set[str]:
    try:
        cls = load_plugin(kind, name)
    except PluginError:
        return set()  # validation reports the unknown or broken plugin
    return set(cls.Config.model_fields)  # type: ignore[attr-defined]


_ENVIRONMENT = re.compile(r"\$\{\s*oc\.env\s*:\s*([^,}]*)")
"""OmegaConf's built-in resolver that reads an environment variable."""


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        return [pair for k, v in value.items() for pair in _strings(v, f"{path}.{k}".lstrip("."))]
    if isinstance(value, list):
        return [pair for i, v in enumerate(value) for pair in _strings(v, f"{path}[{i}]")]
    return [(path, value)] if isinstance(value, str) else []


def _refuse_environment(config: DictConfig, source: str | Path | None) -> None:
    """Refuse ``${oc.env:VAR}``: a recipe never reads the environment (secrets would be saved
    in recipe.yaml and sent to the logger). Pass the value as an override instead."""
    raw = OmegaConf.to_container(config, resolve=False)
    problems = [
        Problem(
            path,
            f"{text!r} reads the environment variable {match.group(1).strip()!r}; recipes may "
            f"not read the environment. Pass the value as an override instead: "
            f"{path}=$" + match.group(1).strip(),
        )
        for path, text in _strings(raw, "")
        for match in [_ENVIRONMENT.search(text)]
        if match is not None
    ]
    if problems:
        raise RecipeError(problems, source)


def _resolve(config: DictConfig, source: str | Path | None) -> dict[str, Any]:
    try:
        data = OmegaConf.to_container(config, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        problems = _interpolation_problems(config) or [Problem("", f"interpolation failed: {exc}")]
        raise RecipeError(problems, source) from None
    assert isinstance(data, dict)
    return data  # type: ignore[return-value]


def _interpolation_problems(node: DictConfig | ListConfig) -> list[Problem]:
    problems = []
    keys: Sequence[Any] = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        try:
            value = node[key]
        except OmegaConfBaseException as exc:
            first_line = str(getattr(exc, "msg", exc)).splitlines()[0]
            raw = node._get_node(key)._value()  # type: ignore[union-attr]  # the unresolved text
            path = getattr(exc, "full_key", "") or str(key)
            problems.append(Problem(path, f"{first_line} (in {raw!r})"))
            continue
        if isinstance(value, DictConfig | ListConfig):
            problems += _interpolation_problems(value)
    return problems
