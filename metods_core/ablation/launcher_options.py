"""Choose and configure an ablation's launcher: the file's ``launcher:`` section, then the CLI.

A launcher section is ``{name: <launcher>, <option>: <value>, ...}``; ``name`` defaults to
``local``. Naming another launcher on the command line replaces the file's section (its
options belonged to the other launcher), as switching a recipe component does; options given
on the command line are added to the section. The section is validated against the
launcher's ``Config`` with every problem reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from metods_core.ablation.launcher import Launcher
from metods_core.registry import PluginError, load_plugin

DEFAULT_LAUNCHER = "local"
"""The launcher of an ablation that names none."""


def merge_launcher_section(
    section: Mapping[str, Any] | None, name: str | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the file's ``section`` with the command line's launcher ``name`` and ``options``."""
    merged = dict(section or {})
    merged.setdefault("name", DEFAULT_LAUNCHER)
    if name is not None and name != merged["name"]:
        merged = {"name": name}  # the file's options were the other launcher's
    return {**merged, **options}


def launcher_problems(section: Mapping[str, Any], where: str = "launcher") -> list[str]:
    """Return every problem of a launcher section (empty when it is valid)."""
    try:
        create_launcher(section, where)
    except PluginError as exc:
        return exc.args[0].split("\n")
    return []


def create_launcher(section: Mapping[str, Any], where: str = "launcher") -> Launcher:
    """Load the launcher named in ``section`` and configure it with the section's other keys.

    Raises:
        PluginError: the launcher is unknown or broken, or an option is invalid (each problem
            on its own line, with its dotted path).
    """
    from metods_core.recipe import pydantic_problems

    name = section.get("name", DEFAULT_LAUNCHER)
    if not isinstance(name, str):
        raise PluginError(f"{where}.name: expected a launcher name, got {name!r}")
    try:
        cls = load_plugin("launcher", name)
    except PluginError as exc:
        raise PluginError(f"{where}.name: {exc}") from None
    options = {key: value for key, value in section.items() if key != "name"}
    config_cls = cls.Config  # type: ignore[attr-defined]  # checked by load_plugin
    try:
        config = config_cls.model_validate(options)
    except ValidationError as exc:
        problems = pydantic_problems(exc, config_cls, prefix=where, known=["name"])
        raise PluginError("\n".join(str(problem) for problem in problems)) from None
    launcher = cls(config)
    assert isinstance(launcher, Launcher)
    return launcher


def as_section(launcher: Launcher, name: str) -> dict[str, Any]:
    """Return the launcher's full configuration as a section (for ablation.json)."""
    return {"name": name, **launcher.config.model_dump(mode="json")}
