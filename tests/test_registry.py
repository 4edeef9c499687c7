"""Entry-point discovery and loading (DESIGN section 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from metods_core.errors import MetodsError
from metods_core.interfaces import PlasticityRule
from metods_core.registry import (
    GROUPS,
    PluginConflictError,
    PluginInvalidError,
    PluginLoadError,
    PluginNotFoundError,
    describe_plugin,
    list_plugins,
    load_plugin,
)

METODS_CLI = Path(sys.executable).parent / "metods"
BROKEN = {"metods.plasticity": {"broken": "broken_mod:Rule"}}
BROKEN_SOURCE = 'raise ImportError("broken_mod needs a library that is not installed")\n'


def test_groups_name_the_four_extension_points():
    """Each recipe section kind maps to its entry-point group, and so do ablation launchers."""
    assert GROUPS == {
        "plasticity": "metods.plasticity",
        "readout": "metods.readout",
        "task": "metods.tasks",
        "meta_optimizer": "metods.meta_optimizers",
        "launcher": "metods.launchers",
    }


def test_listing_reads_metadata_without_importing(fake_site):
    """list_plugins returns sorted PluginInfo and imports no plugin module."""
    fake_site(
        "probe-plugin",
        {"metods.plasticity": {"zz_probe": "probe_mod:Rule", "aa_probe": "probe_mod:Other"}},
        {"probe_mod": "raise RuntimeError('imported')\n"},
    )
    infos = list_plugins("plasticity")
    names = [info.name for info in infos]
    assert names == sorted(names)
    assert {"aa_probe", "zz_probe", "metods"} <= set(names)
    assert "probe_mod" not in sys.modules
    probe = next(info for info in infos if info.name == "zz_probe")
    assert (probe.value, probe.distribution, probe.version) == (
        "probe_mod:Rule",
        "probe-plugin",
        "0.1",
    )
    metods = next(info for info in infos if info.name == "metods")
    assert metods.distribution == "metods-plugins"


def test_load_by_name_returns_the_class_with_its_config():
    """The built-in MetODS rule loads through its entry point like any third-party plugin."""
    cls = load_plugin("plasticity", "metods")
    assert issubclass(cls, PlasticityRule)
    assert cls.Config().recursion_steps >= 1


def test_unknown_name_lists_available_and_suggests():
    """A typo fails with the available names and a close match."""
    with pytest.raises(PluginNotFoundError) as caught:
        load_plugin("plasticity", "metodz")
    message = str(caught.value)
    assert "did you mean 'metods'?" in message
    assert "available: " in message and "metods" in caught.value.available
    assert isinstance(caught.value, MetodsError)


def test_unknown_kind_is_a_metods_error():
    """Only the four kinds exist."""
    with pytest.raises(MetodsError, match="unknown component kind"):
        list_plugins("optimizer")


def test_escape_hatch_imports_module_attr(tiny_plugins):
    """A name with ':' is imported directly, still checked against the interface."""
    cls = load_plugin("plasticity", "tiny_plugins:TinyRule")
    assert cls.__name__ == "TinyRule" and issubclass(cls, PlasticityRule)
    with pytest.raises(PluginLoadError, match="no_such_module"):
        load_plugin("plasticity", "no_such_module:Rule")
    with pytest.raises(PluginLoadError, match="AttributeError"):
        load_plugin("plasticity", "tiny_plugins:Missing")


def test_wrong_kind_or_missing_config_is_rejected(tiny_plugins):
    """A class of another interface, a non-component, or a non-pydantic Config is refused."""
    with pytest.raises(PluginInvalidError, match="not a subclass of .*PlasticityRule"):
        load_plugin("plasticity", "tiny_plugins:TinyTasks")
    with pytest.raises(PluginInvalidError, match="not a subclass"):
        load_plugin("task", "tiny_plugins:NotAComponent")
    with pytest.raises(PluginInvalidError, match="Config"):
        load_plugin("plasticity", "tiny_plugins:RuleWithoutConfig")
    with pytest.raises(PluginInvalidError, match="abstract"):
        load_plugin("plasticity", "metods_core.interfaces:PlasticityRule")


def test_broken_plugin_is_reported_and_isolated(fake_site):
    """A plugin that fails to import names its distribution; the others still load."""
    fake_site("broken-plugin", BROKEN, {"broken_mod": BROKEN_SOURCE})
    assert "broken" in [info.name for info in list_plugins("plasticity")]
    with pytest.raises(PluginLoadError) as caught:
        load_plugin("plasticity", "broken")
    message = str(caught.value)
    assert "plugin 'broken' of group metods.plasticity (distribution broken-plugin 0.1)" in message
    assert "failed to import: ImportError: broken_mod needs a library" in message
    assert isinstance(caught.value.__cause__, ImportError)
    assert issubclass(load_plugin("plasticity", "metods"), PlasticityRule)
    info = next(info for info in list_plugins("plasticity") if info.name == "broken")
    assert describe_plugin(info).startswith("BROKEN: ImportError: broken_mod needs")


def test_describe_gives_first_docstring_line():
    """The one-line summary is the first line of the class docstring."""
    info = next(info for info in list_plugins("plasticity") if info.name == "metods")
    assert describe_plugin(info).startswith("MetODS self-modifying synapses")


def test_same_name_from_two_distributions_conflicts(fake_site):
    """Two distributions claiming one name is an error naming both, not an overwrite."""
    fake_site("twin-a", {"metods.plasticity": {"twin": "twin_a:Rule"}})
    fake_site("twin-b", {"metods.plasticity": {"twin": "twin_b:Rule"}})
    with pytest.raises(PluginConflictError) as caught:
        load_plugin("plasticity", "twin")
    assert "twin-a 0.1" in str(caught.value) and "twin-b 0.1" in str(caught.value)
    assert "plasticity.name=twin_a:Rule or plasticity.name=twin_b:Rule" in str(caught.value)


def test_cli_plugins_shows_broken_plugin_and_exits_0(fake_site, tmp_path):
    """`metods plugins` lists a broken plugin as BROKEN with its cause and still succeeds."""
    root = fake_site("broken-plugin", BROKEN, {"broken_mod": BROKEN_SOURCE})
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [str(METODS_CLI), "plugins"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "metods.plasticity" in done.stdout
    line = next(line for line in done.stdout.splitlines() if line.strip().startswith("broken "))
    assert "broken-plugin" in line and "BROKEN: ImportError" in line
    assert "MetODS self-modifying synapses" in done.stdout
    assert "Traceback" not in done.stderr
