"""Windows of recorded lifetimes replayed side by side from stored plastic states, and PPO's
``window`` option built on them."""

from __future__ import annotations

import math

import pytest
import torch
from metods_plugins.meta_optimizers.ppo import PPOMetaOptimizer
from pydantic import ValidationError
from replay_agents import STEPS, harlow_agent, harlow_outer_batch, record_of

from metods_core.recipe import RecipeError, load_recipe
from metods_core.rollout import replay_lifetimes, replay_steps
from metods_core.windows import split_into_windows, to_windows

WINDOW = 5  # 23 steps -> 5 windows, the last one 3 steps and 2 of padding


def test_to_windows_layout_and_padding() -> None:
    """Column ``j * batch + b`` holds steps ``[j * w, (j + 1) * w)`` of lifetime ``b``; the
    last window is padded with the fill value; trailing dimensions are kept."""
    steps, batch = 7, 2
    tensor = torch.arange(steps * batch * 3).reshape(steps, batch, 3)
    windows = to_windows(tensor, 3, fill=-1)
    assert windows.shape == (3, 3 * batch, 3)
    for j in range(3):
        for b in range(batch):
            for t in range(3):
                step = j * 3 + t
                expected = tensor[step, b] if step < steps else torch.full((3,), -1)
                assert torch.equal(windows[t, j * batch + b], expected), (j, b, t)
    assert torch.equal(to_windows(tensor, steps), tensor)  # one window: unchanged


@pytest.mark.parametrize("rule_name", ["metods", "metods_held", "lstm", "fake"])
def test_windows_replay_the_collected_lifetimes(rule_name: str) -> None:
    """With the collecting meta-parameters, every window replayed from its stored state gives
    the outputs of the whole-lifetime replay at the same steps (float64, to 1e-12), for
    tensor, tuple and NamedTuple states, whatever subset of windows is replayed together."""
    agent, tasks = harlow_agent(rule_name)
    record = record_of(agent, tasks, batch=3)
    with torch.no_grad():
        whole = replay_lifetimes(agent, record)
    windows = split_into_windows(agent, record, WINDOW)
    units = math.ceil(STEPS / WINDOW) * 3
    assert windows.window == WINDOW and windows.first.tolist() == [True] * 3 + [False] * (units - 3)
    alive = to_windows(torch.ones(STEPS, 3, dtype=torch.bool), WINDOW, fill=False)
    expected = to_windows(whole.log_probs, WINDOW)
    for index in (torch.arange(units), torch.tensor([14, 0, 7]), torch.tensor([4])):
        with torch.no_grad():
            replay = windows.replay(agent, index)
        assert replay.log_probs.shape == (WINDOW, len(index))
        mask = alive[:, index]
        torch.testing.assert_close(
            replay.log_probs[mask], expected[:, index][mask], rtol=0, atol=1e-12
        )
        values = to_windows(whole.values, WINDOW)[:, index]
        torch.testing.assert_close(replay.values[mask], values[mask], rtol=0, atol=1e-12)


def test_gradients_stay_within_each_window() -> None:
    """A window's loss reaches the meta-parameters through its own steps only: the learned
    initial synapses W_0 get a gradient from the first windows and none from later ones, and
    a later window's gradient is that of its steps replayed from the detached true state."""
    agent, tasks = harlow_agent("metods")
    record = record_of(agent, tasks, batch=2)
    windows = split_into_windows(agent, record, WINDOW)
    initial = agent.get_parameter("rule.initial_weights")

    def gradient_of(index: torch.Tensor) -> dict[str, torch.Tensor]:
        agent.zero_grad(set_to_none=True)
        windows.replay(agent, index).log_probs.sum().backward()
        return {n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}

    assert gradient_of(torch.tensor([0, 1]))["rule.initial_weights"].abs().max() > 0
    later = gradient_of(torch.tensor([4, 5]))  # window 2 of both lifetimes: steps [10, 15)
    assert initial.grad is None or not initial.grad.any()
    with torch.no_grad():
        _, state = replay_steps(agent, record, agent.init_state(2), 0, 2 * WINDOW)
    agent.zero_grad(set_to_none=True)
    replay, _ = replay_steps(agent, record, state, 2 * WINDOW, 3 * WINDOW)
    replay.log_probs.sum().backward()
    for name, parameter in agent.named_parameters():
        if parameter.grad is not None and name != "rule.initial_weights":
            torch.testing.assert_close(later[name], parameter.grad, rtol=0, atol=1e-12)


def ppo_gradients(window: int | None) -> dict[str, torch.Tensor]:
    """Return the gradients of one PPO update (1 epoch, 1 minibatch, no clip, lr 0)."""
    agent, tasks = harlow_agent("metods")
    config = PPOMetaOptimizer.Config(epochs=1, minibatches=1, max_grad_norm=1e12, window=window)
    meta = PPOMetaOptimizer(config)
    batch = harlow_outer_batch(tasks, torch.optim.SGD(agent.parameters(), lr=0.0), 3)
    metrics = meta.training_step(agent, batch)
    batch.close()
    assert torch.isfinite(metrics["loss"]) and metrics["epochs_done"].item() == 1.0
    return {n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}


def test_ppo_window_of_the_whole_lifetime_is_whole_lifetime_ppo() -> None:
    """A window at least as long as the lifetime gives whole-lifetime PPO's gradients; a
    shorter one changes them (no gradient between windows) but keeps them finite."""
    whole = ppo_gradients(None)
    same = ppo_gradients(STEPS)
    windowed = ppo_gradients(WINDOW)
    assert whole.keys() == same.keys()
    for name, grad in whole.items():
        torch.testing.assert_close(same[name], grad, rtol=0, atol=1e-10, msg=name)
    assert any(not torch.allclose(windowed[n], g) for n, g in whole.items())
    assert all(torch.isfinite(g).all() for g in windowed.values())


def test_ppo_windows_make_the_minibatches() -> None:
    """With windows, ``minibatches`` splits the windows: 3 lifetimes of 23 steps in windows
    of 5 are 15 units, so 4 minibatches per epoch run 8 updates in 2 epochs; the first
    update's ratio is 1 (the stored states are the collecting ones)."""
    agent, tasks = harlow_agent("metods")
    config = PPOMetaOptimizer.Config(epochs=2, minibatches=4, window=WINDOW, target_kl=1e-9)
    meta = PPOMetaOptimizer(config)
    batch = harlow_outer_batch(tasks, meta.configure_optimizer(agent), 3)
    metrics = meta.training_step(agent, batch)
    batch.close()
    assert metrics["epochs_done"].item() == 0.25  # the second update was off-policy: stopped
    assert metrics["approx_kl"].item() < 1e-12
    assert metrics["env_steps"].item() == 3 * STEPS


def test_window_needs_full_bptt_and_a_positive_length() -> None:
    """A window with checkpointed BPTT, or of length 0, is a recipe error saying what to set."""
    with pytest.raises(ValidationError, match="bptt.mode=full"):
        PPOMetaOptimizer.Config(window=50, bptt={"mode": "checkpointed", "chunk": 10})
    with pytest.raises(ValidationError):
        PPOMetaOptimizer.Config(window=0)
    recipe = "recipes/harlow/metods_ppo.yaml"
    loaded = load_recipe(recipe, ["meta_optimizer.window=25"])
    assert loaded.meta_optimizer.config.window == 25  # type: ignore[attr-defined]
    bad = ["meta_optimizer.window=25", "meta_optimizer.bptt.mode=truncated"]
    with pytest.raises(RecipeError, match="meta_optimizer"):
        load_recipe(recipe, bad)
