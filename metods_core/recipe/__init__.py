"""Recipes: YAML files that compose an experiment, validated into a typed ``Recipe``.

Loading (``load_recipe_dict``) uses OmegaConf, and only its data features: no resolver that runs
code is registered, and YAML is read with a safe loader.

1. **Composition.** A top-level ``defaults: [base.yaml, ...]`` list names base recipes, by paths
   relative to the including file. They are loaded recursively and merged in order, then the
   file itself is merged on top. A file that includes itself, directly or not, is an error.
2. **Overrides.** Command-line ``key=value`` items (OmegaConf dotlist: ``trainer.max_steps=10``,
   ``logger.wandb.tags=[a,b]``) are merged on top.
3. **Component switching.** When a layer (a file onto its defaults, overrides onto the recipe,
   an ablation grid's values, which are overrides) sets ``<component>.name`` (component = task,
   plasticity, readout or meta_optimizer) to another plugin than the layer below names, that
   section is replaced: it keeps only the keys of the old section that the new plugin's
   ``Config`` accepts, plus the keys the layer sets (one function, ``merge_layer``). So
   ``plasticity.name=hebbian``, or ``plasticity: {name: hebbian}`` in a file whose defaults
   name MetODS, drops the MetODS-only keys instead of failing on them, and
   ``plasticity.name=hebbian plasticity.lr=0.1`` sets the new rule's parameters.
4. **Interpolation.** ``${path.to.key}`` values are resolved last, on the merged result; a
   reference to a missing key, or a ``???`` value left unset, is an error. ``${oc.env:VAR}`` is
   refused: a recipe never reads the environment (pass the value as an override).

Validation (``validate_recipe``) runs in two phases and reports every problem of both at once:
the recipe's own fields (the sections below and the shape of the component sections), then each
component's parameters against its plugin's ``Config``.
"""

from metods_core.recipe.files import load_recipe, recipe_to_dict, recipe_to_yaml
from metods_core.recipe.loading import apply_overrides, load_recipe_dict
from metods_core.recipe.schema import (
    COMPONENTS,
    ComponentSpec,
    DataConfig,
    EvaluationConfig,
    LoggerConfig,
    Problem,
    Recipe,
    RecipeError,
    TrainerConfig,
    WandbConfig,
)
from metods_core.recipe.validation import pydantic_problems, validate_recipe

__all__ = [
    "COMPONENTS",
    "ComponentSpec",
    "DataConfig",
    "EvaluationConfig",
    "LoggerConfig",
    "Problem",
    "Recipe",
    "RecipeError",
    "TrainerConfig",
    "WandbConfig",
    "apply_overrides",
    "load_recipe",
    "load_recipe_dict",
    "pydantic_problems",
    "recipe_to_dict",
    "recipe_to_yaml",
    "validate_recipe",
]
