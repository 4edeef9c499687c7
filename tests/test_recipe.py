"""Recipes: composition, overrides, interpolation, switching and validation (DESIGN section 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from metods_core.agent import AgentConfig
from metods_core.recipe import (
    ComponentSpec,
    Problem,
    Recipe,
    RecipeError,
    apply_overrides,
    load_recipe,
    load_recipe_dict,
    recipe_to_dict,
    recipe_to_yaml,
    validate_recipe,
)

BASE = """\
# A tiny recipe: the MetODS rule with escape-hatch stand-ins for the other components.
seed: 1
task: {name: "tiny_plugins:TinyTasks", trials: 4}
agent: {hidden: 8}
plasticity: {name: metods, recursion_steps: 2, write: linear}
readout: {name: "tiny_plugins:TinyReadout"}
meta_optimizer: {name: "tiny_plugins:TinyOptimizer", lr: 0.01}
trainer: {max_steps: 5}
"""


@pytest.fixture
def base(tmp_path: Path, tiny_plugins: str) -> Path:
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(path: Path, overrides: list[str] = ()) -> dict[str, str]:  # type: ignore[assignment]
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, overrides)
    return {problem.path: problem.message for problem in caught.value.problems}


def test_valid_recipe_builds_components_and_fills_defaults(base):
    """Components become ComponentSpec with a validated Config; every section gets defaults."""
    recipe = load_recipe(base)
    assert isinstance(recipe.plasticity, ComponentSpec)
    assert recipe.plasticity.name == "metods"
    assert recipe.plasticity.config.recursion_steps == 2
    assert recipe.plasticity.config.alpha == "elementwise"  # the plugin's default
    assert recipe.task.cls.__name__ == "TinyTasks" and recipe.task.config.arms == 2
    assert recipe.agent == AgentConfig(hidden=8)
    assert recipe.trainer.max_steps == 5 and recipe.trainer.precision == "32-true"
    assert recipe.data.batch_tasks == 64
    assert recipe.logger.wandb.mode == "offline" and recipe.logger.csv
    assert recipe.evaluation.episodes == 1000
    assert recipe.source == str(base)


def test_every_problem_is_reported_together(tmp_path, tiny_plugins):
    """Unknown field, wrong type, out of range, unknown plugin and missing field, all at once."""
    path = write(
        tmp_path / "bad.yaml",
        """\
seed: one
task: {name: "tiny_plugins:NeedyTasks"}
plasticity: {name: metods, recursion_step: 4, recursion_steps: 40, alpha: elementwize}
readout: {name: metodz}
trainer: {max_steps: 0, devices: 1.5}
logger: {wandb: {mode: onlin}}
""",
    )
    problems = problems_of(path)
    assert problems["plasticity.recursion_step"] == (
        "unknown field (did you mean 'recursion_steps'?)"
    )
    assert "got 'one'" in problems["seed"] and "integer" in problems["seed"]
    assert problems["plasticity.recursion_steps"] == "expected less than or equal to 16, got 40"
    assert problems["trainer.max_steps"] == "expected greater than 0, got 0"
    assert problems["trainer.devices"] == "expected int, str or list[int], got 1.5"
    assert "did you mean 'elementwise'?" in problems["plasticity.alpha"]
    assert "did you mean 'online'?" in problems["logger.wandb.mode"]
    assert problems["readout.name"].startswith("unknown readout plugin 'metodz'")
    assert problems["task.size"].startswith("missing required field (Side of the grid")
    assert problems["meta_optimizer"].startswith("missing required section")
    assert len(problems) == 10


def test_report_lists_problems_under_the_recipe_path():
    """RecipeError.report() names the recipe and gives one dotted line per problem."""
    error = RecipeError([Problem("a.b", "bad"), Problem("c", "worse")], source="r.yaml")
    assert error.report() == "recipe r.yaml has 2 problems:\n  - a.b: bad\n  - c: worse"
    assert str(error) == error.report()


def test_component_shape_problems(tiny_plugins):
    """A component must be a mapping with a string name."""
    data = yaml.safe_load(BASE)
    data.update(plasticity="metods", readout={"kind": "x"}, task={"name": 3})
    with pytest.raises(RecipeError) as caught:
        validate_recipe(data)
    problems = {p.path: p.message for p in caught.value.problems}
    assert "write `plasticity: {name: metods}`" in problems["plasticity"]
    assert problems["readout.name"].startswith("missing required field")
    assert problems["task.name"] == "expected a plugin name, got 3"


def test_defaults_compose_in_order_with_the_file_on_top(tmp_path, base):
    """Bases merge in list order, recursively, relative to the including file; the file wins."""
    write(tmp_path / "parts" / "long.yaml", "defaults: [../base.yaml]\ntrainer: {max_steps: 50}\n")
    write(
        tmp_path / "parts" / "seed.yaml",
        "seed: 7\ntrainer: {max_steps: 70, log_every_n_steps: 3}\n",
    )
    top = write(
        tmp_path / "exp" / "top.yaml",
        "defaults: [../parts/long.yaml, ../parts/seed.yaml]\nplasticity: {recursion_steps: 3}\n",
    )
    recipe = load_recipe(top)
    assert recipe.seed == 7
    assert recipe.trainer.max_steps == 70 and recipe.trainer.log_every_n_steps == 3
    assert recipe.plasticity.config.recursion_steps == 3
    assert recipe.plasticity.config.write == "linear"  # from base.yaml, two levels down
    assert "defaults" not in load_recipe_dict(top)


def test_defaults_cycle_and_missing_base_are_errors(tmp_path):
    """A recipe that includes itself, or a base that does not exist, is one clear problem."""
    write(tmp_path / "a.yaml", "defaults: [b.yaml]\n")
    write(tmp_path / "b.yaml", "defaults: [a.yaml]\n")
    with pytest.raises(RecipeError, match="cycle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_recipe_dict(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "defaults: [nowhere.yaml]\n")
    with pytest.raises(RecipeError, match="file not found: .*nowhere.yaml"):
        load_recipe_dict(tmp_path / "c.yaml")
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe_dict(tmp_path / "absent.yaml")
    write(tmp_path / "d.yaml", "trainer: {max_steps: 3}\n")
    write(tmp_path / "e.yaml", "defaults: [d.yaml]\ntrainer: [1]\n")
    with pytest.raises(RecipeError, match="e.yaml: cannot merge it onto its defaults"):
        load_recipe_dict(tmp_path / "e.yaml")


def test_yaml_syntax_error_is_a_recipe_error(tmp_path):
    """Broken YAML becomes one problem naming the file and the position."""
    path = write(tmp_path / "broken.yaml", "seed: 1\ntask: {name: [unclosed\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe_dict(path)
    assert len(caught.value.problems) == 1
    assert "YAML syntax error" in caught.value.problems[0].message
    assert "at line 3, column 1" in caught.value.problems[0].message


def test_interpolation_shares_values_and_reports_bad_references(tmp_path, base):
    """${...} resolves on the merged recipe; missing keys and ??? values are reported by path."""
    path = write(
        tmp_path / "interp.yaml",
        "defaults: [base.yaml]\nevaluation: {batch_tasks: '${data.batch_tasks}'}\n"
        "data: {batch_tasks: 16}\n",
    )
    assert load_recipe(path).evaluation.batch_tasks == 16
    bad = write(
        tmp_path / "bad.yaml",
        "defaults: [base.yaml]\nseed: ${trainer.max_stepz}\nname: ???\n",
    )
    problems = problems_of(bad)
    assert "trainer.max_stepz" in problems["seed"] and "not found" in problems["seed"]
    assert "Missing mandatory value" in problems["name"]


def test_overrides_set_nested_values_and_lists(base):
    """key=value overrides merge on top, with YAML-typed values."""
    recipe = load_recipe(
        base, ["trainer.max_steps=9", "logger.wandb.tags=[a,b]", "plasticity.sigma=relu"]
    )
    assert recipe.trainer.max_steps == 9
    assert recipe.logger.wandb.tags == ["a", "b"]
    assert recipe.plasticity.config.sigma == "relu"
    assert recipe.plasticity.config.write == "linear"


def test_overrides_may_interpolate(base):
    """An override can refer to other keys; it is resolved with the rest of the recipe."""
    recipe = load_recipe(base, ["data.batch_tasks=8", "evaluation.batch_tasks=${data.batch_tasks}"])
    assert recipe.evaluation.batch_tasks == 8


def test_apply_overrides_on_plain_data(tiny_plugins):
    """Plain data (an ablation grid's base) takes overrides and switching the same way."""
    data = yaml.safe_load(BASE)
    changed = apply_overrides(data, ["plasticity.name=tiny_plugins:TinyRule", "seed=5"])
    assert changed["plasticity"] == {"name": "tiny_plugins:TinyRule", "recursion_steps": 2}
    assert changed["seed"] == 5 and data["seed"] == 1


def test_malformed_override_is_reported(base):
    """An override without '=' (or with Hydra's +/~ prefixes) is a problem, not a silent key."""
    with pytest.raises(RecipeError, match="'trainer.max_steps' is not of the form key=value"):
        load_recipe(base, ["trainer.max_steps"])
    with pytest.raises(RecipeError, match="not of the form"):
        load_recipe(base, ["+seed=3"])


def test_switching_a_component_keeps_only_accepted_keys(base):
    """plasticity.name=<other> replaces the section: shared keys kept, the rest dropped."""
    recipe = load_recipe(base, ["plasticity.name=tiny_plugins:TinyRule", "plasticity.decay=0.5"])
    assert recipe.plasticity.cls.__name__ == "TinyRule"
    assert recipe.plasticity.config.recursion_steps == 2  # accepted by both rules: kept
    assert recipe.plasticity.config.decay == 0.5  # set by the override
    back = load_recipe(base, ["plasticity.name=metods"])  # same name: nothing replaced
    assert back.plasticity.config.write == "linear"


def test_switching_the_task(base):
    """task.name=<other> keeps `trials`, drops `arms`-like keys the new sampler rejects."""
    data = load_recipe_dict(base, ["task.name=tiny_plugins:OtherTasks", "task.noise=0.1"])
    assert data["task"] == {"name": "tiny_plugins:OtherTasks", "trials": 4, "noise": 0.1}
    recipe = validate_recipe(data)
    assert recipe.task.config.trials == 4


def test_switching_to_an_unknown_plugin_reports_the_name_only(base):
    """Switching to an unknown name drops the old keys, so the report is about the name."""
    problems = problems_of(base, ["plasticity.name=hebbain"])
    assert list(problems) == ["plasticity.name"]
    assert "unknown plasticity plugin 'hebbain'" in problems["plasticity.name"]


def test_round_trip_through_yaml(tmp_path, base):
    """recipe_to_dict -> YAML -> load_recipe gives an equal Recipe."""
    recipe = load_recipe(base, ["logger.wandb.tags=[x]", "trainer.devices=[0]", r"name=run \${x}"])
    assert recipe.name == "run ${x}"  # escaped: a literal that must stay one after saving
    data = recipe_to_dict(recipe)
    assert data["plasticity"]["name"] == "metods" and data["plasticity"]["recursion_steps"] == 2
    saved = write(tmp_path / "saved" / "recipe.yaml", recipe_to_yaml(recipe))
    again = load_recipe(saved)
    assert again == recipe
    assert isinstance(again, Recipe) and again.source == str(base)
