"""The throughput benchmark runs end to end on a tiny grid (timings are never checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "harlow_throughput.py"


def test_bad_grid_is_refused_before_anything_runs():
    """A setting that is not three positive integers is a usage error (exit status 2)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--grid", "8,20"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "expected B,N,S" in done.stderr


@pytest.mark.slow
def test_tiny_grid_prints_both_tables_and_writes_json(tmp_path):
    """A tiny grid prints the outer-step and plastic-update tables and writes every number."""
    out = tmp_path / "bench.json"
    command = [sys.executable, str(SCRIPT), "--grid", "8,20,1", "--steps", "2", "--warmup", "1"]
    command += ["--threads", "1", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| batch | N | S | env-steps/s | active env-steps/s | outer steps/s |" in done.stdout
    assert "| batch | N | S | synaptic updates/s |" in done.stdout
    assert "| 8 | 20 | 1 |" in done.stdout
    results = json.loads(out.read_text())
    (outer,) = results["outer"]
    (rule,) = results["rule"]
    assert (outer["batch"], outer["N"], outer["S"]) == (8, 20, 1)
    assert outer["env_steps_per_s"] > 0
    assert 0 < outer["active_env_steps_per_s"] <= outer["env_steps_per_s"]
    assert rule["synaptic_updates_per_s"] > 0
