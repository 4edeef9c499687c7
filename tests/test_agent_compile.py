"""``trainer.compile``: the agent's whole step compiled gives the eager step's outputs and
meta-gradients, for MetODS and for a baseline rule."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from metods_core.components import create_agent, create_task_sampler
from metods_core.recipe import load_recipe
from metods_core.rollout import replay_lifetimes, run_lifetimes

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "harlow"


def _lifetime_gradients(agent: torch.nn.Module, recipe_seed: int, sampler) -> tuple:
    """Run 6 Harlow lifetimes with fixed seeds; return the loss and its meta-gradients."""
    tasks = sampler.sample(6, "train", torch.Generator().manual_seed(recipe_seed))
    lifetimes = run_lifetimes(agent, sampler.make_env(tasks), torch.Generator().manual_seed(1))
    loss = -(lifetimes.log_probs * lifetimes.rewards).sum() + lifetimes.values.square().sum()
    parameters = [p for p in agent.parameters() if p.requires_grad]
    return loss.detach(), torch.autograd.grad(loss, parameters)


def _eager_and_compiled() -> tuple:
    """Return the shipped MetODS recipe's sampler (20-step lifetimes), its agent, and a copy
    of the agent with its step compiled."""
    recipe = load_recipe(RECIPES / "metods.yaml", ["trainer.compile=false", "task.max_steps=20"])
    sampler = create_task_sampler(recipe)
    torch.manual_seed(0)
    eager = create_agent(recipe, sampler)
    compiled = copy.deepcopy(eager)
    compiled.compile_step()
    return sampler, eager, compiled


@pytest.mark.slow
def test_compiled_agent_step_matches_eager() -> None:
    """Same actions, loss and gradients to 1e-6 (float32), eager against compiled (the
    shipped MetODS recipe's agent)."""
    sampler, eager, compiled = _eager_and_compiled()
    assert compiled.step_is_compiled and not eager.step_is_compiled
    loss_eager, grads_eager = _lifetime_gradients(eager, 3, sampler)
    loss_compiled, grads_compiled = _lifetime_gradients(compiled, 3, sampler)
    torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-6, atol=1e-6)
    for got, expected in zip(grads_compiled, grads_eager, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_recipe_compile_switch_compiles_the_whole_agent_step() -> None:
    """``trainer.compile=true`` compiles ``Agent.step`` (encoder, rule and read-out)."""
    for flag in (False, True):
        recipe = load_recipe(RECIPES / "metods.yaml", [f"trainer.compile={str(flag).lower()}"])
        agent = create_agent(recipe, create_task_sampler(recipe))
        assert agent.step_is_compiled is flag


@pytest.mark.slow
def test_compiled_replay_matches_the_rollout_and_the_eager_replay() -> None:
    """``evaluate_actions`` compiled (PPO's replay): the collected log-probabilities and values
    again, and the eager replay's loss gradients, to 1e-6 in float32."""
    sampler, eager, compiled = _eager_and_compiled()
    tasks = sampler.sample(6, "train", torch.Generator().manual_seed(3))
    with torch.no_grad():
        lifetimes = run_lifetimes(
            compiled, sampler.make_env(tasks), torch.Generator().manual_seed(1), record=True
        )
    assert lifetimes.record is not None
    gradients = []
    for agent in (compiled, eager):
        replay = replay_lifetimes(agent, lifetimes.record)
        torch.testing.assert_close(replay.log_probs, lifetimes.log_probs, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(replay.values, lifetimes.values, rtol=1e-6, atol=1e-6)
        loss = -replay.log_probs.sum() + replay.values.square().sum() - replay.entropies.sum()
        parameters = [p for p in agent.parameters() if p.requires_grad]
        gradients.append(torch.autograd.grad(loss, parameters))
    for got, expected in zip(*gradients, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
