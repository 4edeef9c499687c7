"""The task-author's guide's example (examples/bandit_plugin) works as the guide says.

Nothing is installed: the package's source folder goes on sys.path and the sampler is named
by ``module:attr``, the way out the registry offers for unpackaged or clashing plugins.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from metods_core.evaluation import evaluate_run
from metods_core.recipe import load_recipe
from metods_core.registry import load_plugin
from metods_core.testing import check_task_sampler
from metods_core.training import train_recipe

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "bandit_plugin"
NAME = "metods_bandit:TwoArmedBandit"


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))


def test_the_bandit_passes_the_task_suite(on_path: None) -> None:
    """The sampler, loaded by module:attr, passes every task check with 2-episode lifetimes."""
    check_task_sampler(load_plugin("task", NAME), pulls=3, episodes_per_lifetime=2)


def test_the_example_recipe_trains_and_evaluates(on_path: None, tmp_path: Path) -> None:
    """The example's recipe, its task named by module:attr, trains 2 outer steps and is
    meta-tested with the family's metrics (a curve per episode included)."""
    tiny = [f"task.name={NAME}", "data.batch_tasks=4", "trainer.max_steps=2"]
    tiny += ["logger.wandb.mode=disabled", "evaluation.batch_tasks=4"]
    recipe = load_recipe(EXAMPLE / "recipes" / "bandit.yaml", tiny)
    assert recipe.task.config.episodes_per_lifetime == 2
    summary = evaluate_run(train_recipe(recipe, tmp_path / "run"), episodes=4)
    assert summary["mean_reward_n"] == 4 and len(summary["best_arm_rate"]) == 2


@pytest.mark.slow
def test_the_plugins_own_tests_pass() -> None:
    """The example's own pytest suite passes with only its source folder on the path."""
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
        env=env,
        cwd=EXAMPLE,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_the_guides_code_is_the_examples_code() -> None:
    """Every code line of docs/writing-tasks.md's Python blocks (imports aside) is a line of the
    example package, so the guide cannot drift from the tested code."""
    guide = (ROOT / "docs" / "writing-tasks.md").read_text()
    sources = [*(EXAMPLE / "src").rglob("*.py"), *(EXAMPLE / "tests").rglob("*.py")]
    known = {line.strip() for path in sources for line in path.read_text().splitlines()}
    shown = [
        line.strip()
        for block in re.findall(r"```python\n(.*?)```", guide, re.S)
        for line in block.splitlines()
        if line.strip() and not line.lstrip().startswith(("from ", "import "))
    ]
    assert shown, "the guide shows no code"
    stale = [line for line in shown if line not in known]
    assert not stale, "lines of the guide not in examples/bandit_plugin:\n" + "\n".join(stale)
