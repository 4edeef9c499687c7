"""Print the recipe field reference of docs/recipes.md as Markdown tables.

Run:  .venv/bin/python docs/gen_reference.py > /tmp/reference.md

The tables are generated from the pydantic models themselves: the recipe's own sections
(``metods_core.recipe``, ``metods_core.agent``) and the ``Config`` of every installed plugin,
found through the registry. When a field or a plugin changes, replace everything in
docs/recipes.md after the introduction of its "Field reference" section (the first "### Top
level" heading onwards) with this script's output.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from metods_core.agent import AgentConfig
from metods_core.recipe import (
    ComponentSpec,
    DataConfig,
    EvaluationConfig,
    LoggerConfig,
    Recipe,
    TrainerConfig,
    WandbConfig,
)
from metods_core.registry import GROUPS, list_plugins, load_plugin

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("agent", AgentConfig),
    ("data", DataConfig),
    ("trainer", TrainerConfig),
    ("logger", LoggerConfig),
    ("logger.wandb", WandbConfig),
    ("evaluation", EvaluationConfig),
]

_BOUNDS = [
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "<="),
]


def type_name(annotation: Any) -> str:
    """Return a short, readable name of a field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin is list:
        return f"list[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    if annotation is ComponentSpec:
        return "component: `{name: ..., <its Config>}`"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f'"{m.value}"' for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: Any) -> str:
    """Return the field's default as it would be written in YAML."""
    if field.is_required():
        return "required"
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def constraint_text(field: Any) -> str:
    """Return the field's numeric bounds, such as ``> 0``."""
    parts = []
    for item in field.metadata:
        for kind, attr, symbol in _BOUNDS:
            if isinstance(item, kind):
                parts.append(f"{symbol} {getattr(item, attr)}")
    return ", ".join(parts)


def table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> str:
    """Return a Markdown table of ``model``'s fields."""
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        kind = type_name(field.annotation)
        bounds = constraint_text(field)
        if bounds:
            kind += f" ({bounds})"
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{name}` | {kind} | `{default_text(field)}` | {description} |")
    return "\n".join(rows)


def main() -> None:
    """Print every table."""
    print("### Top level\n")
    print(table(Recipe))
    for path, model in SECTIONS:
        print(f"\n### `{path}`\n")
        doc = (model.__doc__ or "").strip().splitlines()[0]
        print(f"{doc}\n")
        print(table(model))
    for kind, group in GROUPS.items():
        for info in list_plugins(kind):
            cls = load_plugin(kind, info.name)
            config = cls.Config  # type: ignore[attr-defined]
            print(f"\n### `{kind}: {{name: {info.name}}}` — `{cls.__name__}`\n")
            print(f"Entry point `{info.name}` in `{group}` ({info.distribution} {info.version}).")
            doc = (cls.__doc__ or "").strip().splitlines()[0]
            print(f"{doc}\n")
            if config.model_fields:
                print(table(config))
            else:
                print("No parameters besides `name`.")


if __name__ == "__main__":
    main()
