"""metods: meta-reinforcement learning with self-modifying networks.

The public API for plugin authors and scripts is what this module exports (``__all__``);
everything else is machinery that may change. The conformance suites live in
``metods_core.testing``. Names are imported on first use (a module ``__getattr__``, PEP 562),
so ``import metods_core`` and ``metods --help`` stay fast: torch is loaded only when a name that
needs it is used.

Example::

    from metods_core import ComponentConfig, PlasticityRule, State, TaskBatch, run_lifetimes
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metods_core._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # The extension points (one abstract class each) and the data they exchange.
    "BatchedEnv": "metods_core.interfaces",
    "ComponentConfig": "metods_core.interfaces",
    "MetaOptimizer": "metods_core.interfaces",
    "OuterBatch": "metods_core.interfaces",
    "PlasticityRule": "metods_core.interfaces",
    "Readout": "metods_core.interfaces",
    "ReduceOp": "metods_core.interfaces",
    "Split": "metods_core.interfaces",
    "State": "metods_core.interfaces",
    "TaskBatch": "metods_core.interfaces",
    "TaskSampler": "metods_core.interfaces",
    "map_state": "metods_core.interfaces",
    "where_state": "metods_core.interfaces",
    # The agent, and running or replaying lifetimes with it.
    "Agent": "metods_core.agent",
    "AgentConfig": "metods_core.agent",
    "Lifetimes": "metods_core.rollout",
    "LifetimeRecord": "metods_core.rollout",
    "Replay": "metods_core.rollout",
    "run_lifetimes": "metods_core.rollout",
    "replay_lifetimes": "metods_core.rollout",
    "replay_steps": "metods_core.rollout",
    "BPTTConfig": "metods_core.bptt",
    "backward_through_lifetimes": "metods_core.bptt",
    "derive_seed": "metods_core.training.seeding",
    # Recipes, runs and errors.
    "MetodsError": "metods_core.errors",
    "Recipe": "metods_core.recipe",
    "RecipeError": "metods_core.recipe",
    "load_recipe": "metods_core.recipe",
    "recipe_to_dict": "metods_core.recipe",
    "recipe_to_yaml": "metods_core.recipe",
    "load_plugin": "metods_core.registry",
    "list_plugins": "metods_core.registry",
    "RunFolder": "metods_core.run_folder",
    "train_recipe": "metods_core.training",
    "evaluate_run": "metods_core.evaluation",
}

__all__ = [  # a literal list, for linters and type checkers; equal to _EXPORTS' keys
    "__version__",
    "Agent",
    "AgentConfig",
    "BPTTConfig",
    "BatchedEnv",
    "ComponentConfig",
    "LifetimeRecord",
    "Lifetimes",
    "MetaOptimizer",
    "MetodsError",
    "OuterBatch",
    "PlasticityRule",
    "Readout",
    "Recipe",
    "RecipeError",
    "ReduceOp",
    "Replay",
    "RunFolder",
    "Split",
    "State",
    "TaskBatch",
    "TaskSampler",
    "backward_through_lifetimes",
    "derive_seed",
    "evaluate_run",
    "list_plugins",
    "load_plugin",
    "load_recipe",
    "map_state",
    "recipe_to_dict",
    "recipe_to_yaml",
    "replay_lifetimes",
    "replay_steps",
    "run_lifetimes",
    "train_recipe",
    "where_state",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the imports are lazy
    from metods_core.agent import Agent, AgentConfig
    from metods_core.bptt import BPTTConfig, backward_through_lifetimes
    from metods_core.errors import MetodsError
    from metods_core.evaluation import evaluate_run
    from metods_core.interfaces import (
        BatchedEnv,
        ComponentConfig,
        MetaOptimizer,
        OuterBatch,
        PlasticityRule,
        Readout,
        ReduceOp,
        Split,
        State,
        TaskBatch,
        TaskSampler,
        map_state,
        where_state,
    )
    from metods_core.recipe import Recipe, RecipeError, load_recipe, recipe_to_dict, recipe_to_yaml
    from metods_core.registry import list_plugins, load_plugin
    from metods_core.rollout import (
        LifetimeRecord,
        Lifetimes,
        Replay,
        replay_lifetimes,
        replay_steps,
        run_lifetimes,
    )
    from metods_core.run_folder import RunFolder
    from metods_core.training import train_recipe
    from metods_core.training.seeding import derive_seed
