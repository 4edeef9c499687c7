"""``harlow_throughput.py`` runs any recipe: S is applied only to rules that have it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "harlow_throughput.py"


def _single(recipe: str, setting: str) -> dict:
    """Run one tiny outer-step measurement in a fresh interpreter; return its JSON line."""
    command = [sys.executable, str(SCRIPT), "--single", setting, "--part", "outer"]
    command += ["--recipe", str(REPO / recipe), "--steps", "1", "--warmup", "0"]
    command += ["--threads", "1", "--override", "trainer.compile=false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_settings_parse_with_or_without_s():
    """``B,N,S`` and ``B,N`` are settings; anything else is a usage error."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import harlow_throughput as bench
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert bench.parse_grid("64,20,4;8,16") == [(64, 20, 4), (8, 16, None)]
    assert bench.format_setting((8, 16, None)) == "8,16"
    for bad in ("8", "8,20,1,2", "8,0", "a,b"):
        with pytest.raises(Exception, match="expected B,N,S or B,N"):
            bench.parse_setting(bad)


@pytest.mark.parametrize(
    ("recipe", "setting", "rule", "recursions"),
    [
        ("recipes/harlow/metods.yaml", "2,8,3", "metods", 3),
        ("recipes/harlow/lstm.yaml", "2,8,3", "lstm", None),  # S given, the rule has none
        ("recipes/harlow/hebbian.yaml", "2,8", "hebbian", None),
    ],
)
def test_any_rule_recipe_runs_one_outer_step(recipe, setting, rule, recursions):
    """MetODS gets S; baseline rules run with S left out instead of failing validation."""
    result = _single(recipe, setting)
    assert (result["rule"], result["S"], result["batch"], result["N"]) == (
        rule,
        recursions,
        2,
        8,
    )
    assert result["lifetime_steps"] == 75
    assert result["env_steps_per_s"] > 0 and result["ms_per_outer_step"] > 0
