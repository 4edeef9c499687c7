"""Validate recipe data in two phases and turn every pydantic error into a ``Problem``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from metods_core.interfaces.config import ComponentConfig
from metods_core.recipe.schema import (
    COMPONENTS,
    ComponentSpec,
    Problem,
    Recipe,
    RecipeError,
    _RecipeFields,
)
from metods_core.registry import GROUPS, PluginError, list_plugins, load_plugin, suggest

_MISSING = object()


def validate_recipe(data: Mapping[str, Any], source: str | Path | None = None) -> Recipe:
    """Validate plain recipe data into a ``Recipe``, reporting every problem at once.

    ``source`` names the file in error reports; it is stored in the recipe unless ``data``
    already records one (a saved resolved recipe keeps the path it was first loaded from).

    Raises:
        RecipeError: with one ``Problem`` per bad key.
    """
    if not isinstance(data, Mapping):
        got = type(data).__name__
        raise RecipeError([Problem("", f"a recipe must be a mapping, got {got}")], source)
    problems: list[Problem] = []
    own = {key: value for key, value in data.items() if key not in COMPONENTS}
    if own.get("source") is None:
        own["source"] = str(source) if source is not None else None
    fields = None
    try:
        fields = _RecipeFields.model_validate(own)
    except ValidationError as exc:
        problems += pydantic_problems(exc, _RecipeFields, known=list(Recipe.model_fields))
    specs: dict[str, Any] = {}
    for kind in COMPONENTS:
        spec, found = _validate_component(kind, data.get(kind, _MISSING))
        problems += found
        specs[kind] = spec
    if fields is not None:
        problems += _memory_problems(fields)
    if problems or fields is None:
        raise RecipeError(problems, source)
    values = {name: getattr(fields, name) for name in type(fields).model_fields}
    return Recipe(**values, **specs)


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not available on this platform
        return None


def _memory_problems(fields: Any) -> list[Problem]:
    """Refuse an agent whose smallest allocation cannot fit in this machine's memory.

    Every rule holds at least one N x N float32 matrix (N = ``agent.hidden``); a plastic rule
    holds one per task of the batch as well. Bounding that before allocating turns a typo
    (``agent.hidden=100000000``) into a message instead of an allocator traceback.
    """
    memory = _physical_memory()
    hidden = fields.agent.hidden
    needed = 4 * hidden * hidden
    if memory is None or needed <= memory:
        return []
    message = (
        f"{hidden} needs at least {needed / 2**30:.3g} GiB for one {hidden} x {hidden} float32 "
        f"matrix, more than this machine's {memory / 2**30:.3g} GiB of memory"
    )
    return [Problem("agent.hidden", message)]


def _validate_component(kind: str, section: Any) -> tuple[ComponentSpec | None, list[Problem]]:
    example = f"write e.g. `{kind}: {{name: <plugin>}}`"
    if section is _MISSING or section is None:
        return None, [Problem(kind, f"missing required section; {example}{_available(kind)}")]
    if not isinstance(section, Mapping):
        hint = f"`{kind}: {{name: {section}}}`" if isinstance(section, str) else example
        message = f"expected a mapping with a 'name', got {_show(section)}; write {hint}"
        return None, [Problem(kind, message)]
    name = section.get("name")
    if name is None:
        message = f"missing required field: the plugin's name{_available(kind)}"
        return None, [Problem(f"{kind}.name", message)]
    if not isinstance(name, str):
        return None, [Problem(f"{kind}.name", f"expected a plugin name, got {_show(name)}")]
    try:
        cls = load_plugin(kind, name)
    except PluginError as exc:  # unknown name (with suggestion), broken, conflicting, invalid
        return None, [Problem(f"{kind}.name", str(exc))]
    params = {key: value for key, value in section.items() if key != "name"}
    config_cls: type[ComponentConfig] = cls.Config  # type: ignore[attr-defined]
    try:
        config = config_cls.model_validate(params)
    except ValidationError as exc:
        return None, pydantic_problems(exc, config_cls, prefix=kind, known=["name"])
    return ComponentSpec(name=name, cls=cls, config=config), []


def _available(kind: str) -> str:
    names = sorted({info.name for info in list_plugins(kind)})
    group = GROUPS[kind]
    return (
        f" (plugins in {group}: {', '.join(names)})" if names else f" (none installed in {group})"
    )


def pydantic_problems(
    error: ValidationError, model: type[BaseModel], prefix: str = "", known: Sequence[str] = ()
) -> list[Problem]:
    """Turn a pydantic ``ValidationError`` of ``model`` into problems with dotted paths.

    Args:
        error: the error raised by ``model.model_validate``.
        model: the validated model, used to suggest field names and describe missing fields.
        prefix: dotted path of the model inside the recipe.
        known: extra valid keys at the model's top level (for "did you mean").
    """
    # Errors of one union field (one per member type) become one problem, in first-seen order.
    grouped: dict[Any, list[tuple[str, Any]]] = {}
    problems: dict[Any, Problem] = {}
    for index, err in enumerate(error.errors(include_url=False)):
        parts, owner, tag_at = _walk(model, err["loc"])
        if tag_at is None:
            extra = known if owner is model else ()
            problems[index] = Problem(_join(prefix, parts), _message(err, owner, extra))
            continue
        field = tuple(parts[:tag_at])
        grouped.setdefault(field, []).append((str(err["loc"][tag_at]), err["input"]))
        names = list(dict.fromkeys(tag for tag, _ in grouped[field]))
        expected = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        message = f"expected {expected}, got {_show(grouped[field][0][1])}"
        problems[field] = Problem(_join(prefix, field), message)
    return list(problems.values())


def _join(prefix: str, parts: Sequence[str]) -> str:
    return ".".join([prefix, *parts] if prefix else parts)


def _walk(
    model: type[BaseModel], loc: tuple[Any, ...]
) -> tuple[list[str], type[BaseModel], int | None]:
    """Follow ``loc`` through nested models: (path parts, model owning the last key, tag index)."""
    parts: list[str] = []
    owner, tag_at = model, None
    current: Any = model
    for item in loc:
        as_model = _model_of(current)
        if isinstance(item, str) and as_model is not None:
            owner = as_model
            parts.append(item)
            field = as_model.model_fields.get(item)
            current = field.annotation if field is not None else None
        elif isinstance(item, str) and _is_union(current) and tag_at is None:
            tag_at = len(parts)  # pydantic names the union member that failed; not a key
            current = None
        else:
            parts.append(str(item))
            current = None
    return parts, owner, tag_at


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if _is_union(annotation) or get_origin(annotation) is Union:
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _model_of(members[0])
    return None


def _is_union(annotation: Any) -> bool:
    if get_origin(annotation) not in (Union, UnionType):
        return False
    return len([arg for arg in get_args(annotation) if arg is not type(None)]) > 1


def _message(err: Any, owner: type[BaseModel], extra_keys: Sequence[str]) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        fields = list(dict.fromkeys([*extra_keys, *owner.model_fields]))
        match = suggest(key, fields)
        if match:
            return f"unknown field (did you mean {match!r}?)"
        return f"unknown field; expected one of: {', '.join(fields)}"
    if kind == "missing":
        field = owner.model_fields.get(str(err["loc"][-1]))
        description = f" ({field.description})" if field is not None and field.description else ""
        return f"missing required field{description}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of settings, got {_show(value)}"
    message = re.sub(r"^Input should be ", "expected ", err["msg"])
    message = re.sub(r"^Value error, ", "", message)
    message += f", got {_show(value)}"
    if kind in ("literal_error", "enum") and isinstance(value, str):
        choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        match = suggest(value, choices)
        if match:
            message += f" (did you mean {match!r}?)"
    return message


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
