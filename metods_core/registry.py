"""Find components through Python entry points and load them by name.

Every component a recipe can name (plasticity rule, read-out, task sampler, meta-optimizer) is
registered under one entry-point group; the entry-point name is the name used in recipes. Our own
components register there too (``plugins/pyproject.toml``), exactly as a third party would.

Discovery reads installed metadata only, so listing never imports a plugin; a plugin is imported
when it is loaded by name, and an import failure is reported as a ``PluginLoadError`` naming its
distribution, leaving every other plugin usable. The escape hatch for unpackaged research code is
a name of the form ``"module:Class"``, imported directly.

Follows flake8's ``plugins/finder.py`` (list without importing, sort, wrap import failures).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from metods_core.errors import MetodsError

GROUPS: dict[str, str] = {
    "plasticity": "metods.plasticity",
    "readout": "metods.readout",
    "task": "metods.tasks",
    "meta_optimizer": "metods.meta_optimizers",
    "launcher": "metods.launchers",
}
"""Recipe (or ablation-file) section kind -> entry-point group."""

_INTERFACES: dict[str, tuple[str, str]] = {
    "plasticity": ("metods_core.interfaces.plasticity", "PlasticityRule"),
    "readout": ("metods_core.interfaces.readout", "Readout"),
    "task": ("metods_core.interfaces.tasks", "TaskSampler"),
    "meta_optimizer": ("metods_core.interfaces.meta_optimizer", "MetaOptimizer"),
    "launcher": ("metods_core.ablation.launcher", "Launcher"),  # runs an ablation's runs
}


class PluginError(MetodsError):
    """A component could not be found, imported or used."""


class PluginNotFoundError(PluginError):
    """No installed plugin has the requested name."""

    def __init__(self, kind: str, name: str, available: list[str]) -> None:
        self.kind, self.name, self.available = kind, name, available
        self.suggestion = suggest(name, available)
        message = f"unknown {kind} plugin {name!r}"
        if self.suggestion:
            message += f" (did you mean {self.suggestion!r}?)"
        if available:
            message += f"; available: {', '.join(available)}"
        else:
            message += (
                f"; no plugin is installed in entry-point group {GROUPS[kind]}"
                " (pip install metods-plugins, or a package that provides one)"
            )
        super().__init__(message)


class PluginLoadError(PluginError):
    """A plugin exists but importing it failed."""


class PluginConflictError(PluginError):
    """Two distributions register the same name in one group."""


class PluginInvalidError(PluginError):
    """A plugin imported, but is not a usable component of its kind."""


@dataclass(frozen=True)
class PluginInfo:
    """One registered component, known from metadata alone (nothing imported)."""

    kind: str
    """Recipe section kind: plasticity, readout, task or meta_optimizer."""
    name: str
    """The entry-point name: the component's name in recipes."""
    value: str
    """Where it lives, ``"module:attr"``."""
    distribution: str | None
    """The distribution that registers it (None for an escape-hatch ``module:attr`` name)."""
    version: str | None
    """That distribution's version."""

    @property
    def group(self) -> str:
        """The entry-point group of this plugin's kind."""
        return GROUPS[self.kind]

    def origin(self) -> str:
        """Describe where the plugin comes from, for error messages."""
        if self.distribution is None:
            return f"{self.kind} plugin {self.value!r}"
        return (
            f"plugin {self.name!r} of group {self.group} "
            f"(distribution {self.distribution} {self.version})"
        )


def suggest(word: str, options: list[str]) -> str | None:
    """Return the option closest to ``word``, or None when none is close."""
    matches = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _check_kind(kind: str) -> str:
    if kind not in GROUPS:
        raise PluginError(f"unknown component kind {kind!r}; expected one of: {', '.join(GROUPS)}")
    return GROUPS[kind]


def _info(kind: str, entry_point: EntryPoint) -> PluginInfo:
    dist = entry_point.dist
    return PluginInfo(
        kind=kind,
        name=entry_point.name,
        value=entry_point.value,
        distribution=dist.name if dist is not None else None,
        version=dist.version if dist is not None else None,
    )


def list_plugins(kind: str) -> list[PluginInfo]:
    """List the plugins of ``kind`` from installed metadata, sorted by name, importing nothing.

    A name registered by two distributions appears twice (``load_plugin`` refuses it).
    """
    group = _check_kind(kind)
    infos = {_info(kind, ep) for ep in entry_points(group=group)}
    return sorted(infos, key=lambda info: (info.name, info.distribution or "", info.value))


def load_plugin(kind: str, name: str) -> type:
    """Import the component ``name`` of ``kind`` and return its class.

    ``name`` is an entry-point name, or ``"module:Class"`` to import unpackaged code directly.

    Raises:
        PluginNotFoundError: no plugin has that name (lists the available ones).
        PluginConflictError: two distributions register that name.
        PluginLoadError: importing the plugin failed.
        PluginInvalidError: the object is not a class implementing ``kind``'s interface.
    """
    _check_kind(kind)
    if ":" in name:
        info = PluginInfo(kind=kind, name=name, value=name, distribution=None, version=None)
        return _load_info(info)
    candidates = [info for info in list_plugins(kind) if info.name == name]
    if not candidates:
        available = sorted({info.name for info in list_plugins(kind)})
        raise PluginNotFoundError(kind, name, available)
    if len(candidates) > 1:
        providers = " and ".join(
            f"{info.distribution} {info.version} ({info.value})" for info in candidates
        )
        choices = " or ".join(f"{kind}.name={info.value}" for info in candidates)
        raise PluginConflictError(
            f"{kind} plugin {name!r} is registered by {len(candidates)} distributions: "
            f"{providers}. Name the one you mean by module:attr in the recipe ({choices}); "
            "nothing needs to be uninstalled"
        )
    return _load_info(candidates[0])


def describe_plugin(info: PluginInfo) -> str:
    """Return the first line of the plugin's class docstring, or ``"BROKEN: <cause>"``.

    This imports the plugin.
    """
    try:
        cls = _load_info(info)
    except (Exception, SystemExit) as exc:  # any failure of third-party code is reported
        cause = exc.__cause__ if isinstance(exc, PluginLoadError) and exc.__cause__ else exc
        return f"BROKEN: {type(cause).__name__}: {cause}"
    doc = inspect.getdoc(cls) or ""
    return doc.strip().splitlines()[0] if doc.strip() else "(no description)"


def _import_object(value: str, direct: bool) -> object:
    module_name, _, attr = value.partition(":")
    if direct:
        # Research code run from its own folder: let "my_module:MyRule" find ./my_module.py, as
        # `python -m` would, without shadowing installed packages.
        cwd = os.getcwd()
        if cwd not in sys.path and "" not in sys.path:
            sys.path.append(cwd)
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _load_info(info: PluginInfo) -> type:
    module_name, _, attr = info.value.partition(":")
    if not module_name or not attr:
        raise PluginLoadError(f"{info.origin()}: {info.value!r} is not of the form 'module:Class'")
    before = set(sys.modules)
    try:
        obj = _import_object(info.value, direct=info.distribution is None)
    except (Exception, SystemExit) as exc:  # a plugin may fail in any way, even sys.exit()
        _forget_new_modules(before)
        hint = "" if info.distribution is None else "; reinstall or fix that distribution"
        raise PluginLoadError(
            f"{info.origin()} failed to import: {type(exc).__name__}: {exc}{hint}"
        ) from exc
    _check_component(info, obj)
    assert isinstance(obj, type)
    return obj


def _forget_new_modules(before: set[str]) -> None:
    """Remove the modules a failed plugin import left behind, half-initialised.

    Otherwise another plugin whose module imports one of them finds it in ``sys.modules``
    and passes as healthy. Only packages that were not loaded at all before the import are
    removed (never a submodule of torch or of another package already in use), and never a
    compiled extension, which cannot always be imported twice.
    """
    loaded_tops = {name.partition(".")[0] for name in before}
    for name in set(sys.modules) - before:
        module = sys.modules[name]
        filename = str(getattr(module, "__file__", "") or "")
        if name.partition(".")[0] not in loaded_tops and not filename.endswith((".so", ".pyd")):
            del sys.modules[name]


def _check_component(info: PluginInfo, obj: object) -> None:
    module_name, class_name = _INTERFACES[info.kind]
    interface = getattr(importlib.import_module(module_name), class_name)
    from metods_core.interfaces.config import ComponentConfig

    where = f"{info.origin()} ({info.value})"
    if not inspect.isclass(obj) or not issubclass(obj, interface):
        raise PluginInvalidError(
            f"{where} is {obj!r}, not a subclass of {interface.__module__}.{class_name}"
        )
    config = getattr(obj, "Config", None)
    if not (inspect.isclass(config) and issubclass(config, ComponentConfig)):
        raise PluginInvalidError(
            f"{where} has no nested `Config` class subclassing "
            f"metods_core.interfaces.ComponentConfig (found {config!r})"
        )
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise PluginInvalidError(f"{where} is abstract: it does not implement {missing}")
