"""The shipped MuJoCo recipes: MetODS and its LSTM (RL^2) baseline of matched size, on PPO."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from metods_core.components import create_agent, create_task_sampler
from metods_core.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2] / "recipes" / "mujoco"
FAMILIES = ("cheetah_dir", "cheetah_vel", "ant_dir")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mujoco") is None,
    reason='needs the MuJoCo extra: pip install "metods-plugins[mujoco]"',
)


def parameter_count(path: Path) -> int:
    """Return the number of trainable meta-parameters of the recipe's agent."""
    recipe = load_recipe(path)
    agent = create_agent(recipe, create_task_sampler(recipe))
    return sum(p.numel() for p in agent.parameters() if p.requires_grad)


def stated_counts(path: Path) -> list[int]:
    """Return the numbers of the header's 'Parameter count ...: N; other.yaml M' line."""
    match = re.search(r"# Parameter count[^:]*: (\d+); \S+ (\d+)", path.read_text())
    assert match, f"{path.name} states no parameter count in its header"
    return [int(match.group(1)), int(match.group(2))]


@pytest.mark.parametrize("family", FAMILIES)
def test_lstm_baseline_matches_the_metods_parameter_count(family: str) -> None:
    """The LSTM recipe's agent is within 2 % of MetODS's size, and the headers say the truth."""
    metods, lstm = ROOT / f"{family}_metods.yaml", ROOT / f"{family}_lstm.yaml"
    n_metods, n_lstm = parameter_count(metods), parameter_count(lstm)
    assert abs(n_lstm - n_metods) <= 0.02 * n_metods, (n_metods, n_lstm)
    assert stated_counts(metods) == [n_metods, n_lstm]
    assert stated_counts(lstm) == [n_lstm, n_metods]


@pytest.mark.parametrize("family", FAMILIES)
def test_motor_recipes_train_with_ppo(family: str) -> None:
    """Both agents of each family are meta-trained by PPO with the same outer loop."""
    metods = load_recipe(ROOT / f"{family}_metods.yaml")
    lstm = load_recipe(ROOT / f"{family}_lstm.yaml")
    assert metods.meta_optimizer.name == lstm.meta_optimizer.name == "ppo"
    assert metods.meta_optimizer.config == lstm.meta_optimizer.config
    assert metods.plasticity.name == "metods" and lstm.plasticity.name == "lstm"
