"""Replays of a rule that holds its state from step K on (``PlasticityRule.held_from``, the
MetODS rule's ``write_steps``): the steps from K are computed at once by
``Agent.evaluate_held``, with the outputs and gradients of the step-by-step replay."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from replay_agents import (
    HELD_FROM,
    STEPS,
    assert_compiled_replay_matches,
    harlow_agent,
    record_of,
    replay_loss_gradients,
)

from metods_core.agent import Agent
from metods_core.components import create_agent, create_task_sampler
from metods_core.interfaces import State
from metods_core.recipe import load_recipe
from metods_core.rollout import (
    LifetimeRecord,
    Replay,
    replay_lifetimes,
    replay_steps,
    run_lifetimes,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "harlow"


def step_by_step(
    agent: Agent, record: LifetimeRecord, start: int, stop: int, state: State
) -> Replay:
    """The reference: ``Agent.evaluate_actions`` on each step in turn (the rule's ``step``)."""
    scores = []
    for t in range(start, stop):
        scored = Agent.evaluate_actions(
            agent,
            record.observations[t],
            record.previous_actions[t],
            record.previous_rewards[t],
            state,
            record.new_episode[t],
            record.actions[t],
        )
        state = scored.state
        scores.append(scored)
    return Replay(
        *(torch.stack([getattr(s, k) for s in scores]) for k in ("log_prob", "value", "entropy"))
    )


def counted(agent: Agent) -> dict[str, list[int]]:
    """Count the steps each of the agent's replay methods is given."""
    calls: dict[str, list[int]] = {"evaluate_actions": [], "evaluate_held": []}
    agent.evaluate_actions = lambda *a: (
        calls["evaluate_actions"].append(1) or Agent.evaluate_actions(agent, *a)
    )
    agent.evaluate_held = lambda *a: (
        calls["evaluate_held"].append(a[2].shape[0]) or Agent.evaluate_held(agent, *a)
    )
    return calls


def held_agent_and_record() -> tuple[Agent, LifetimeRecord]:
    """Return the ``metods_held`` agent (W held from step ``HELD_FROM``) and 4 lifetimes."""
    agent, tasks = harlow_agent("metods_held")
    with torch.no_grad():  # a non-zero W_0, so that every read matters
        agent.rule.initial_weights.normal_(generator=torch.Generator().manual_seed(5))
    return agent, record_of(agent, tasks, batch=4)


def test_steps_from_held_from_are_replayed_at_once() -> None:
    """A whole-lifetime replay takes the first K steps one at a time and the other 23 - K in
    one ``evaluate_held`` call; outputs and meta-gradients equal the step-by-step replay's
    (float64, to 1e-12 and 1e-10)."""
    agent, record = held_agent_and_record()
    calls = counted(agent)
    held = replay_lifetimes(agent, record)
    assert calls == {"evaluate_actions": [1] * HELD_FROM, "evaluate_held": [STEPS - HELD_FROM]}
    reference = step_by_step(agent, record, 0, STEPS, agent.init_state(4))
    for part in ("log_probs", "values", "entropies"):
        torch.testing.assert_close(
            getattr(held, part), getattr(reference, part), rtol=0, atol=1e-12
        )
    for got, expected in zip(
        replay_loss_gradients(agent, held), replay_loss_gradients(agent, reference), strict=True
    ):
        assert expected.abs().max() > 0
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("start", "stop"), [(3, 15), (HELD_FROM, 12), (10, STEPS)])
def test_spans_before_across_and_after_held_from(start: int, stop: int) -> None:
    """A span that starts before K, at K or after it: the held part in one call, the outputs
    and the state after the span as step by step, and the gradient into the span's state."""
    agent, record = held_agent_and_record()
    with torch.no_grad():
        _, state = replay_steps(agent, record, agent.init_state(4), 0, start)
    state = (state[0].clone().requires_grad_(True), state[1])
    calls = counted(agent)
    held, held_state = replay_steps(agent, record, state, start, stop)
    assert calls["evaluate_held"] == [stop - max(start, HELD_FROM)]
    assert len(calls["evaluate_actions"]) == max(0, HELD_FROM - start)
    reference = step_by_step(agent, record, start, stop, state)
    torch.testing.assert_close(held.log_probs, reference.log_probs, rtol=0, atol=1e-12)
    _, expected_state = replay_steps(agent, record, state, start, stop, from_lifetime_start=False)
    torch.testing.assert_close(held_state[0], expected_state[0], rtol=0, atol=1e-12)
    assert torch.equal(held_state[1], expected_state[1])
    (grad_held,) = torch.autograd.grad(held.values.sum(), state[0])
    (grad_steps,) = torch.autograd.grad(reference.values.sum(), state[0])
    torch.testing.assert_close(grad_held, grad_steps, rtol=0, atol=1e-10)


def test_a_record_not_from_the_lifetimes_start_is_replayed_step_by_step() -> None:
    """``from_lifetime_start=False`` (windows cut from the middle of lifetimes): the record's
    step index is not the lifetime's, so nothing is replayed at once."""
    agent, record = held_agent_and_record()
    calls = counted(agent)
    replay_steps(agent, record, agent.init_state(4), 0, STEPS, from_lifetime_start=False)
    assert calls == {"evaluate_actions": [1] * STEPS, "evaluate_held": []}


def test_a_rule_that_does_not_hold_is_never_replayed_at_once() -> None:
    """The default ``held_from()`` is None: every step goes through ``evaluate_actions``."""
    agent, tasks = harlow_agent("metods")
    assert agent.rule.held_from() is None
    calls = counted(agent)
    replay_lifetimes(agent, record_of(agent, tasks, batch=2))
    assert calls == {"evaluate_actions": [1] * STEPS, "evaluate_held": []}


@pytest.mark.slow
def test_compiled_held_replay_matches_the_rollout_and_the_eager_replay() -> None:
    """``compile_step`` compiles ``evaluate_held`` for a held rule: the compiled replay (spans
    of 3 before K = 5, the rest at once) gives the rollout's log-probabilities and values and
    the eager replay's gradients, to 1e-6 in float32 (the shipped Harlow MetODS agent with
    ``plasticity.write_steps=5``, 20-step lifetimes)."""
    overrides = ["trainer.compile=false", "task.max_steps=20", "plasticity.write_steps=5"]
    recipe = load_recipe(RECIPES / "metods.yaml", overrides)
    sampler = create_task_sampler(recipe)
    torch.manual_seed(0)
    eager = create_agent(recipe, sampler)
    compiled = copy.deepcopy(eager)
    compiled.compile_step(replay_span=3)
    assert "evaluate_held" in compiled.__dict__ and "evaluate_held" not in eager.__dict__
    tasks = sampler.sample(6, "train", torch.Generator().manual_seed(3))
    with torch.no_grad():
        lifetimes = run_lifetimes(
            eager, sampler.make_env(tasks), torch.Generator().manual_seed(1), record=True
        )
    assert_compiled_replay_matches(compiled, eager, lifetimes)
