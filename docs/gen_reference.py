"""Write docs/recipe-reference.md: every recipe field, generated from the pydantic models.

Run:    .venv/bin/python docs/gen_reference.py           (rewrite the page)
Check:  .venv/bin/python docs/gen_reference.py --check   (exit 1 if the page is stale; CI)

The tables come from the models themselves: the recipe's own sections (``metods_core.recipe``,
``metods_core.agent``) and the ``Config`` of every installed plugin, found through the
registry: field, type, default, constraint and the field's docstring.
"""

from __future__ import annotations

import argparse
import enum
import io
import sys
import types
import typing
from contextlib import redirect_stdout
from pathlib import Path
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


PAGE = Path(__file__).with_name("recipe-reference.md")
INTRODUCTION = """# Recipe reference

Every field a recipe can set, generated from the pydantic models by `docs/gen_reference.py`:
the recipe's own sections, and the `Config` of every plugin installed when it ran (CI checks
that this page matches the code). "required" marks a field without a default; constraints are
checked by validation. How recipes compose, override and switch components:
[recipes.md](recipes.md).
"""


def table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> str:
    """Return a Markdown table of ``model``'s fields."""
    rows = [
        "| field | type | default | constraint | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        kind = type_name(field.annotation)
        bounds = constraint_text(field) or ""
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        default = f"`{default_text(field)}`"
        rows.append(f"| `{name}` | {kind} | {default} | {bounds} | {description} |")
    return "\n".join(rows)


def render() -> str:
    """Return the whole page."""
    out = io.StringIO()
    with redirect_stdout(out):
        print(INTRODUCTION)
        tables()
    return out.getvalue()


def main() -> int:
    """Write the page, or with ``--check`` report whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE} is stale: run .venv/bin/python docs/gen_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


def tables() -> None:
    """Print every table."""
    print("## Top level\n")
    print(table(Recipe))
    for path, model in SECTIONS:
        print(f"\n## `{path}`\n")
        doc = (model.__doc__ or "").strip().splitlines()[0]
        print(f"{doc}\n")
        print(table(model))
    for kind, group in GROUPS.items():
        for info in list_plugins(kind):
            cls = load_plugin(kind, info.name)
            config = cls.Config  # type: ignore[attr-defined]
            print(f"\n## `{kind}: {{name: {info.name}}}` — `{cls.__name__}`\n")
            print(f"Entry point `{info.name}` in `{group}` ({info.distribution} {info.version}).")
            doc = (cls.__doc__ or "").strip().splitlines()[0]
            print(f"{doc}\n")
            if config.model_fields:
                print(table(config))
            else:
                print("No parameters besides `name`.")


if __name__ == "__main__":
    sys.exit(main())
