"""The public API: `metods_core` re-exports what plugin authors use, lazily."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import metods_core

ROOT = Path(__file__).resolve().parents[1]
GUIDES = [ROOT / "docs" / "plugins.md", ROOT / "docs" / "writing-tasks.md"]
PUBLIC = {"metods_core", "metods_core.testing"}


def test_every_exported_name_resolves_to_its_definition() -> None:
    """Each name of __all__ is the object of the module that defines it."""
    assert set(metods_core.__all__) == {"__version__", *metods_core._EXPORTS}
    for name in metods_core.__all__:
        value = getattr(metods_core, name)
        if name != "__version__":
            module = importlib.import_module(metods_core._EXPORTS[name])
            assert value is getattr(module, name), name
    assert {"OuterBatch", "Agent", "run_lifetimes", "replay_lifetimes"} <= set(dir(metods_core))


def test_importing_metods_core_loads_nothing_heavy() -> None:
    """`import metods_core` imports neither torch nor pydantic: names load on first use."""
    code = (
        "import sys, metods_core\n"
        "heavy = {'torch', 'lightning', 'pydantic', 'omegaconf'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "metods_core.TaskBatch\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A misspelt name fails like any missing attribute."""
    try:
        metods_core.OuterBatchh  # noqa: B018
    except AttributeError as error:
        assert "OuterBatchh" in str(error)
    else:
        raise AssertionError("no AttributeError")


def test_the_guides_import_only_the_public_api() -> None:
    """The plugin and task guides import from `metods_core` and `metods_core.testing` only."""
    for guide in GUIDES:
        modules = re.findall(r"^\s*from (metods_core[\w.]*) import", guide.read_text(), re.M)
        modules += re.findall(r"^\s*import (metods_core[\w.]*)", guide.read_text(), re.M)
        assert modules, f"{guide.name} shows no import"
        assert set(modules) <= PUBLIC, f"{guide.name} imports {set(modules) - PUBLIC}"
