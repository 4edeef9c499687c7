"""Backprop through time over recorded lifetimes: full, checkpointed and truncated."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from metods_plugins.meta_optimizers.a2c import A2CMetaOptimizer
from metods_plugins.meta_optimizers.ppo import PPOMetaOptimizer
from pydantic import ValidationError
from replay_agents import STEPS, harlow_agent, harlow_outer_batch, record_of

from metods_core.agent import Agent
from metods_core.bptt import BPTTConfig, backward_through_lifetimes
from metods_core.recipe import RecipeError, load_recipe, recipe_to_yaml
from metods_core.rollout import LifetimeRecord, Replay, replay_steps

CHUNK = 5  # STEPS = 23 is not a multiple of it: the last chunk is shorter


def weighted_loss(batch: int) -> tuple[torch.Tensor, ...]:
    """Return random per-step weights ``(STEPS, batch)`` for the three outputs."""
    generator = torch.Generator().manual_seed(2)
    return tuple(torch.randn(STEPS, batch, generator=generator, dtype=torch.float64) for _ in "abc")


def gradients(agent: Agent, record: LifetimeRecord, config: BPTTConfig, loss_steps=None):
    """Return (gradients by name, detached replay, backward calls) for a weighted step loss."""
    weights = weighted_loss(record.previous_rewards.shape[1])
    mask = torch.zeros(STEPS, 1, dtype=torch.float64)
    mask[slice(*loss_steps) if loss_steps else slice(None)] = 1.0

    def step_loss(replay: Replay, start: int, stop: int) -> torch.Tensor:
        span = slice(start, stop)
        parts = (replay.log_probs, replay.values, replay.entropies)
        return sum(((w[span] * mask[span]) * p).sum() for w, p in zip(weights, parts, strict=True))

    calls: list[torch.Tensor] = []

    def backward(loss: torch.Tensor) -> None:
        calls.append(loss.detach())
        loss.backward()

    agent.zero_grad(set_to_none=True)
    replay = backward_through_lifetimes(agent, record, step_loss, backward, config)
    grads = {n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}
    return grads, replay, calls


@pytest.mark.parametrize("rule_name", ["metods", "metods_held", "lstm", "fake"])
def test_checkpointed_gradients_equal_full_bptt_in_float64(rule_name: str) -> None:
    """Chunked recomputation with the carried state gradient gives full BPTT's gradients
    (to 1e-10) and outputs, with one backward per chunk, for tensor, tuple and NamedTuple
    states with learned or constant initial parts."""
    agent, tasks = harlow_agent(rule_name)
    record = record_of(agent, tasks)
    full, full_replay, full_calls = gradients(agent, record, BPTTConfig(mode="full"))
    config = BPTTConfig(mode="checkpointed", chunk=CHUNK)
    chunked, chunked_replay, chunked_calls = gradients(agent, record, config)
    assert len(full_calls) == 1 and len(chunked_calls) == math.ceil(STEPS / CHUNK)
    assert full.keys() == chunked.keys() == {n for n, p in agent.named_parameters()}
    for name, grad in full.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(chunked[name], grad, rtol=0, atol=1e-10, msg=name)
    for part in ("log_probs", "values", "entropies"):
        expected = getattr(full_replay, part)
        assert getattr(chunked_replay, part).shape == (STEPS, 3)
        torch.testing.assert_close(getattr(chunked_replay, part), expected, rtol=0, atol=1e-12)
        assert not getattr(chunked_replay, part).requires_grad


def test_truncated_bptt_cuts_gradients_between_chunks() -> None:
    """With a loss on the last chunk only, truncated BPTT's gradients are those of that chunk
    replayed from the (detached) true state at its start, and differ from full BPTT's."""
    agent, tasks = harlow_agent("metods")
    record = record_of(agent, tasks)
    last = (STEPS // CHUNK) * CHUNK  # 20: the last chunk is [20, 23)
    config = BPTTConfig(mode="truncated", chunk=CHUNK)
    truncated, _, calls = gradients(agent, record, config, loss_steps=(last, STEPS))
    full, _, _ = gradients(agent, record, BPTTConfig(), loss_steps=(last, STEPS))
    assert len(calls) == math.ceil(STEPS / CHUNK)
    with torch.no_grad():
        _, state = replay_steps(agent, record, agent.init_state(3), 0, last)
    # reference: the same weighted loss, on the last chunk replayed from the detached state
    agent.zero_grad(set_to_none=True)
    weights = weighted_loss(3)
    replay, _ = replay_steps(agent, record, state, last, STEPS)
    parts = (replay.log_probs, replay.values, replay.entropies)
    sum((w[last:] * p).sum() for w, p in zip(weights, parts, strict=True)).backward()
    for name, parameter in agent.named_parameters():
        reference = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
        torch.testing.assert_close(truncated.get(name, torch.zeros_like(parameter)), reference)
    # W_0 reaches the last chunk only through the state: no gradient once truncated
    assert "rule.initial_weights" not in truncated or not truncated["rule.initial_weights"].any()
    assert full["rule.initial_weights"].abs().max() > 0


def test_one_chunk_is_full_bptt() -> None:
    """A chunk at least as long as the lifetime gives full BPTT's gradients in every mode."""
    agent, tasks = harlow_agent("metods")
    record = record_of(agent, tasks)
    full, _, _ = gradients(agent, record, BPTTConfig())
    for mode in ("checkpointed", "truncated"):
        grads, _, calls = gradients(agent, record, BPTTConfig(mode=mode, chunk=STEPS))
        assert len(calls) == 1
        for name, grad in full.items():
            assert torch.equal(grads[name], grad), (mode, name)


def a2c_gradients(rule_name: str, bptt: dict) -> dict[str, torch.Tensor]:
    """Return the gradients of one A2C outer step (no clipping, lr 0) on 4 Harlow tasks."""
    agent, tasks = harlow_agent(rule_name)
    config = A2CMetaOptimizer.Config(max_grad_norm=1e12, normalize_advantages=True, bptt=bptt)
    meta_optimizer = A2CMetaOptimizer(config)
    batch = harlow_outer_batch(tasks, torch.optim.SGD(agent.parameters(), lr=0.0), 4)
    metrics = meta_optimizer.training_step(agent, batch)
    batch.close()
    assert torch.isfinite(metrics["loss"])
    return {n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("rule_name", ["metods", "lstm"])
def test_a2c_checkpointed_and_truncated_paths(rule_name: str) -> None:
    """A2C's checkpointed step gives the gradients of its full-BPTT step (same seed, same
    actions) to 1e-10 in float64; its truncated step gives different ones."""
    full = a2c_gradients(rule_name, {"mode": "full"})
    chunked = a2c_gradients(rule_name, {"mode": "checkpointed", "chunk": CHUNK})
    truncated = a2c_gradients(rule_name, {"mode": "truncated", "chunk": CHUNK})
    assert full.keys() == chunked.keys()
    for name, grad in full.items():
        torch.testing.assert_close(chunked[name], grad, rtol=0, atol=1e-10, msg=name)
    assert any(not torch.allclose(truncated[n], g) for n, g in full.items())


def test_config_is_validated() -> None:
    """Unknown modes and non-positive chunks are refused; the default is full BPTT."""
    assert BPTTConfig().mode == "full"
    with pytest.raises(ValidationError):
        BPTTConfig(mode="adjoint")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        BPTTConfig(chunk=0)
    with pytest.raises(ValidationError):
        BPTTConfig(chunks=4)  # type: ignore[call-arg]


def test_recipe_sets_bptt_as_a_nested_section_and_shows_it() -> None:
    """``meta_optimizer.bptt`` is validated in a recipe and printed by the resolved recipe;
    a bad value is reported with its dotted path."""
    recipe_path = "recipes/harlow/metods.yaml"
    recipe = load_recipe(
        recipe_path, ["meta_optimizer.bptt.mode=checkpointed", "meta_optimizer.bptt.chunk=64"]
    )
    config = recipe.meta_optimizer.config
    assert isinstance(config, A2CMetaOptimizer.Config)
    assert config.bptt == BPTTConfig(mode="checkpointed", chunk=64)
    assert "bptt:" in recipe_to_yaml(recipe) and "mode: checkpointed" in recipe_to_yaml(recipe)
    with pytest.raises(RecipeError, match=r"meta_optimizer\.bptt\.chunk"):
        load_recipe(recipe_path, ["meta_optimizer.bptt.chunk=0"])


def test_ppo_minibatch_checkpointed_gradients_equal_full_bptt() -> None:
    """A PPO minibatch backpropagated in checkpointed chunks gets the gradients and terms of
    its whole-lifetime replay (float64, 1e-10), and a checkpointed outer step runs."""
    agent, tasks = harlow_agent("metods")
    config = PPOMetaOptimizer.Config(bptt={"mode": "checkpointed", "chunk": CHUNK})
    ppo = PPOMetaOptimizer(config)
    batch = harlow_outer_batch(tasks, torch.optim.SGD(agent.parameters(), lr=0.0), 4)
    with torch.no_grad():
        lifetimes = batch.run_lifetimes(agent, record=True)
    advantages, returns = ppo.advantages(lifetimes)
    index = torch.tensor([2, 0, 3])
    targets = ppo.minibatch(lifetimes, advantages, returns, index)
    agent.zero_grad(set_to_none=True)
    full_terms = ppo.minibatch_terms(agent, lifetimes, targets, index)
    full_terms["loss"].backward()
    full = {n: p.grad.clone() for n, p in agent.named_parameters()}
    terms = ppo.minibatch_backward(agent, batch, lifetimes, targets, index)
    for name, parameter in agent.named_parameters():
        assert parameter.grad is not None and full[name].abs().max() > 0, name
        torch.testing.assert_close(parameter.grad, full[name], rtol=0, atol=1e-10, msg=name)
    for name in ("loss", "policy_loss", "value_loss", "entropy"):
        torch.testing.assert_close(terms[name], full_terms[name].detach(), rtol=0, atol=1e-12)
    metrics = ppo.training_step(agent, batch)
    batch.close()
    assert torch.isfinite(metrics["loss"]) and metrics["epochs_done"] == config.epochs


HELPERS = Path(__file__).parent / "helpers"
HARLOW = Path(__file__).resolve().parent.parent / "recipes" / "harlow" / "metods.yaml"


def ddp_parameters(tmp_path: Path, name: str, *overrides: str) -> list[list[float]]:
    """Train 3 outer steps with DDP on 2 CPU processes; return each rank's parameters."""
    run_dir = tmp_path / name
    command = [sys.executable, str(HELPERS / "ddp_check.py"), str(HARLOW), str(run_dir)]
    command += ["trainer.num_threads=1", *overrides]
    env = dict(os.environ, PYTHONPATH=str(HELPERS))
    subprocess.run(command, check=True, env=env, cwd=tmp_path, timeout=300)
    return [json.loads((run_dir / f"rank{k}.json").read_text())["parameters"] for k in (0, 1)]


@pytest.mark.slow
def test_checkpointed_a2c_under_ddp_matches_full_bptt(tmp_path: Path) -> None:
    """Under 2-process DDP (no find_unused_parameters), checkpointed A2C runs although later
    chunks do not reach W_0, keeps the ranks identical, and trains as full BPTT does."""
    full = ddp_parameters(tmp_path, "full")
    chunked = ddp_parameters(
        tmp_path, "chunked", "meta_optimizer.bptt.mode=checkpointed", "meta_optimizer.bptt.chunk=20"
    )
    assert chunked[0] == chunked[1]
    torch.testing.assert_close(torch.tensor(chunked[0]), torch.tensor(full[0]), rtol=0, atol=1e-5)
