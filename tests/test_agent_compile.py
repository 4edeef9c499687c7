"""``trainer.compile``: the agent's whole step compiled gives the eager step's outputs and
meta-gradients, for MetODS and for a baseline rule."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from replay_agents import assert_compiled_replay_matches, replay_loss_gradients

from metods_core.agent import Agent
from metods_core.components import create_agent, create_task_sampler
from metods_core.errors import MetodsError
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
    assert_compiled_replay_matches(compiled, eager, lifetimes)


def _replay_and_gradients(agent: torch.nn.Module, record) -> tuple:
    """Replay ``record`` whole; return the replay and its loss's meta-gradients."""
    replay = replay_lifetimes(agent, record)
    return replay, replay_loss_gradients(agent, replay)


def _recorded_lifetimes(sampler, agent) -> tuple:
    tasks = sampler.sample(6, "train", torch.Generator().manual_seed(3))
    with torch.no_grad():
        return run_lifetimes(
            agent, sampler.make_env(tasks), torch.Generator().manual_seed(1), record=True
        )


def test_replay_in_spans_equals_the_replay_step_by_step() -> None:
    """``replay_span`` 3 over 20 steps (6 spans through ``evaluate_span``, 2 steps left over
    through ``evaluate_actions``): the rollout's outputs and the step-by-step replay's
    gradients again (eager, so exactly the same operators)."""
    sampler, eager, _ = _eager_and_compiled()
    lifetimes = _recorded_lifetimes(sampler, eager)
    by_step, by_step_grads = _replay_and_gradients(eager, lifetimes.record)
    spanned = copy.deepcopy(eager)
    spanned.replay_span = 3
    calls = []
    spanned.evaluate_span = lambda *args: calls.append(1) or Agent.evaluate_span(spanned, *args)
    by_span, by_span_grads = _replay_and_gradients(spanned, lifetimes.record)
    assert len(calls) == 6
    torch.testing.assert_close(by_span.log_probs, lifetimes.log_probs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(by_span.values, by_step.values, rtol=0, atol=0)
    torch.testing.assert_close(by_span.entropies, by_step.entropies, rtol=0, atol=0)
    for got, expected in zip(by_span_grads, by_step_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


def test_recipe_compile_span_sets_the_replay_span() -> None:
    """``trainer.compile_span`` reaches the compiled agent; without ``compile`` it is ignored;
    a span below 1 or above 64 is refused by the recipe's validation."""
    for flag in ("true", "false"):
        recipe = load_recipe(
            RECIPES / "metods.yaml", [f"trainer.compile={flag}", "trainer.compile_span=5"]
        )
        agent = create_agent(recipe, create_task_sampler(recipe))
        assert agent.replay_span == (5 if flag == "true" else 1)
    for bad in (0, 65):
        with pytest.raises(MetodsError, match="compile_span"):
            load_recipe(RECIPES / "metods.yaml", [f"trainer.compile_span={bad}"])


def test_recipe_compile_cpp_wrapper_reaches_the_compiled_agent() -> None:
    """``trainer.compile_cpp_wrapper`` (default true) is the inductor option the agent compiles
    its step, acting and replay with; without ``compile`` nothing is compiled."""
    assert load_recipe(RECIPES / "metods.yaml").trainer.compile_cpp_wrapper is True
    for flag in ("true", "false"):
        recipe = load_recipe(
            RECIPES / "metods.yaml", ["trainer.compile=true", f"trainer.compile_cpp_wrapper={flag}"]
        )
        agent = create_agent(recipe, create_task_sampler(recipe))
        assert agent.compile_options == {"cpp_wrapper": flag == "true"}
    recipe = load_recipe(RECIPES / "metods.yaml", ["trainer.compile=false"])
    assert create_agent(recipe, create_task_sampler(recipe)).compile_options == {}


@pytest.mark.slow
def test_compiled_replay_in_spans_matches_the_eager_replay_under_either_wrapper() -> None:
    """``compile_step(replay_span=3)``: the compiled span (unrolled over 3 steps) and the
    compiled single step for the 2 steps left over give the rollout's log-probabilities and
    values, and the eager replay's gradients, to 1e-6 in float32. Inductor's C++ wrapper (the
    default) calls the same kernels as its Python one: the same rollout (actions,
    log-probabilities, values) and, replayed, the same gradients, bit for bit. (One test, so
    that each wrapper's graphs are compiled once.)"""
    sampler, eager, _ = _eager_and_compiled()
    results = {}
    for cpp_wrapper in (False, True):
        agent = copy.deepcopy(eager)
        agent.compile_step(replay_span=3, cpp_wrapper=cpp_wrapper)
        assert agent.compile_options == {"cpp_wrapper": cpp_wrapper}
        assert agent.replay_span == 3 and "evaluate_span" in agent.__dict__
        lifetimes = _recorded_lifetimes(sampler, agent)
        replay, gradients = _replay_and_gradients(agent, lifetimes.record)
        results[cpp_wrapper] = (lifetimes, replay, gradients)
    (cpp, cpp_replay, cpp_grads), (python, _, python_grads) = results[True], results[False]
    _, eager_grads = _replay_and_gradients(eager, cpp.record)
    torch.testing.assert_close(cpp_replay.log_probs, cpp.log_probs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cpp_replay.values, cpp.values, rtol=1e-6, atol=1e-6)
    for got, expected in zip(cpp_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    for name in ("log_probs", "values", "rewards"):
        torch.testing.assert_close(getattr(cpp, name), getattr(python, name), rtol=0, atol=0)
    torch.testing.assert_close(cpp.record.actions, python.record.actions, rtol=0, atol=0)
    for got, expected in zip(cpp_grads, python_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
