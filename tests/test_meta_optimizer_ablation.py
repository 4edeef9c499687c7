"""The meta-optimizer is an ablated component like the others: a2c, ppo and es on one agent."""

from __future__ import annotations

from pathlib import Path

from metods_core.ablation import ablation_from_grid, load_ablation, plan_runs
from metods_core.registry import load_plugin

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "recipes" / "ablations" / "harlow_meta_optimizers.yaml"
HARLOW = ROOT / "recipes" / "harlow" / "metods.yaml"
NAMES = ["a2c", "ppo", "es"]


def _accepted(name: str) -> set[str]:
    return set(load_plugin("meta_optimizer", name).Config.model_fields) | {"name"}


def test_shipped_ablation_runs_each_algorithm_with_its_own_section(tmp_path: Path) -> None:
    """harlow_meta_optimizers.yaml: one cell per algorithm, the same task, rule and read-out,
    and each meta_optimizer section holds only its own algorithm's fields."""
    runs = plan_runs(load_ablation(ABLATION, out=tmp_path / "meta"), threads=1)
    assert len(runs) == 3 * 3
    firsts = runs[::3]
    assert [run.resolved["meta_optimizer"]["name"] for run in firsts] == NAMES
    for run in firsts:
        section = run.resolved["meta_optimizer"]
        assert set(section) <= _accepted(section["name"])
    for part in ("task", "readout"):
        assert len({repr(run.resolved[part]) for run in firsts}) == 1, part
    assert {run.resolved["plasticity"]["name"] for run in firsts} == {"metods"}


def test_grid_over_the_name_replaces_the_section(tmp_path: Path) -> None:
    """``--grid meta_optimizer.name=a2c,ppo,es`` keeps only the keys each algorithm accepts."""
    grid = ["meta_optimizer.name=" + ",".join(NAMES)]
    runs = plan_runs(ablation_from_grid(HARLOW, grid, 1, [], tmp_path), threads=1)
    assert [run.resolved["meta_optimizer"]["name"] for run in runs] == NAMES
    for run in runs:
        section = run.resolved["meta_optimizer"]
        assert set(section) <= _accepted(section["name"])
    assert "gamma" in runs[1].resolved["meta_optimizer"]  # kept: PPO has a discount too
