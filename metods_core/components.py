"""Build the parts of an experiment from a validated recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING

from metods_core.agent import Agent
from metods_core.errors import MetodsError
from metods_core.interfaces import MetaOptimizer, Readout, TaskSampler

if TYPE_CHECKING:
    from metods_core.recipe import Recipe


def create_task_sampler(recipe: Recipe) -> TaskSampler:
    """Return the recipe's task sampler (its env step compiled under ``trainer.compile``)."""
    sampler: TaskSampler = recipe.task.cls(recipe.task.config)
    if recipe.trainer.compile:
        sampler.compile_env_step()
    return sampler


def create_agent(recipe: Recipe, sampler: TaskSampler) -> Agent:
    """Return the recipe's agent, sized for ``sampler``'s observation and action spaces."""
    readout_cls: type[Readout] = recipe.readout.cls
    if not readout_cls.supports(sampler.action_space):
        raise MetodsError(
            f"read-out '{recipe.readout.name}' cannot act in task '{recipe.task.name}' "
            f"(action space {sampler.action_space}); choose a read-out for that space, "
            "for example readout.name=categorical for discrete actions"
        )
    hidden = recipe.agent.hidden
    rule = recipe.plasticity.cls(recipe.plasticity.config, hidden)
    readout = readout_cls(recipe.readout.config, rule.output_size, sampler.action_space)
    agent = Agent(
        recipe.agent,
        sampler.observation_space,
        sampler.action_space,
        rule,
        readout,
        boundary_input=sampler.episodes_per_lifetime > 1,
    )
    if recipe.trainer.compile:
        agent.compile_step(
            replay_span=recipe.trainer.compile_span, cpp_wrapper=recipe.trainer.compile_cpp_wrapper
        )
    return agent


def create_meta_optimizer(recipe: Recipe) -> MetaOptimizer:
    """Return the recipe's meta-optimizer."""
    return recipe.meta_optimizer.cls(recipe.meta_optimizer.config)
