"""A package's exported names imported on first use (PEP 562), so that importing the package
stays light: the heavy modules (torch, Lightning) load only when a name that needs them is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """Return the module ``__getattr__`` of ``package``: it imports an exported name from its
    module (``exports``: name -> module) on first use and stores it in ``namespace`` (the
    package's ``globals()``), so later look-ups skip it; any other name is an AttributeError."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
