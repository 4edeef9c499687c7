"""Plugins that fail at import: ``sys.exit`` and half-imported modules stay contained."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from metods_core.cli import main
from metods_core.registry import PluginLoadError, load_plugin

MODULES = {
    "exiting_plugin": "import sys\nsys.exit(3)\n",
    # half_plugin imports shared_helper, which imports half_plugin back (a cycle), then fails.
    "half_plugin": "import shared_helper\nraise RuntimeError('half_plugin is broken')\n",
    "shared_helper": "import half_plugin\nfrom tiny_plugins import TinyRule as Rule\n",
}
ENTRY_POINTS = {
    "metods.plasticity": {
        "a_exits": "exiting_plugin:Rule",
        "b_half": "half_plugin:Rule",
        "c_uses_half": "shared_helper:Rule",
    }
}


@pytest.fixture
def broken_site(
    fake_site: Callable[..., Path], tiny_plugins: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distribution with a plugin that exits and two that share a broken module."""
    fake_site("broken-dist", ENTRY_POINTS, MODULES)
    for name in MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield
    for name in MODULES:
        sys.modules.pop(name, None)


def test_plugin_calling_sys_exit_is_a_load_error(broken_site: None) -> None:
    """``sys.exit`` at a plugin's import is reported as a PluginLoadError, not an exit."""
    with pytest.raises(PluginLoadError, match="SystemExit"):
        load_plugin("plasticity", "a_exits")


def test_module_of_a_failed_import_is_forgotten(broken_site: None) -> None:
    """After b_half fails, c_uses_half (whose module imports half_plugin) fails too instead
    of passing as healthy with a half-imported half_plugin in sys.modules."""
    with pytest.raises(PluginLoadError, match="half_plugin is broken"):
        load_plugin("plasticity", "b_half")
    assert "shared_helper" not in sys.modules
    with pytest.raises(PluginLoadError, match="half_plugin is broken"):
        load_plugin("plasticity", "c_uses_half")


def test_plugins_lists_every_group_despite_them(
    broken_site: None, capsys: pytest.CaptureFixture
) -> None:
    """``metods plugins`` exits 0, marks the three as broken and still lists later groups."""
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "BROKEN: SystemExit" in lines["a_exits"]
    assert "BROKEN" in lines["b_half"] and "BROKEN" in lines["c_uses_half"]
    assert "metods.meta_optimizers" in out
