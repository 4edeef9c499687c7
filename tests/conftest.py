"""Shared fixtures of the core's tests: escape-hatch test plugins and fake distributions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

HELPERS = Path(__file__).parent / "helpers"
"""Holds ``tiny_plugins.py``, importable as ``tiny_plugins:Class`` once on ``sys.path``."""


@pytest.fixture
def tiny_plugins(monkeypatch: pytest.MonkeyPatch) -> str:
    """Put the test plugins on ``sys.path``; return the folder (for a subprocess PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(HELPERS))
    return str(HELPERS)


def write_distribution(
    root: Path,
    name: str,
    entry_points: dict[str, dict[str, str]],
    modules: dict[str, str] | None = None,
    version: str = "0.1",
) -> None:
    """Write an installed-looking distribution (``*.dist-info``) and its modules under ``root``."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, names in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in names.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(source)


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Return ``add(name, entry_points, modules)``: install a fake distribution on ``sys.path``."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))

    def add(name: str, entry_points: dict[str, dict[str, str]], modules=None) -> Path:
        write_distribution(root, name, entry_points, modules)
        return root

    return add
