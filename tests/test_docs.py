"""The documentation's listings match the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METODS_CLI = Path(sys.executable).parent / "metods"


def test_the_plugins_listing_in_plugins_md_is_current() -> None:
    """Every line `metods plugins` prints for the shipped plugins appears in docs/plugins.md."""
    out = subprocess.run(
        [str(METODS_CLI), "plugins"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    page = (ROOT / "docs" / "plugins.md").read_text()
    shipped = [line for line in out.splitlines() if "metods-plugins" in line or ":" in line[:30]]
    missing = [line for line in shipped if line not in page.splitlines()]
    assert not missing, "docs/plugins.md lists stale plugins; missing lines:\n" + "\n".join(missing)
