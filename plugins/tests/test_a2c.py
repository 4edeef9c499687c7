"""A2C meta-optimizer: GAE against hand-computed values, the loss, and one training step."""

from __future__ import annotations

import pytest
import torch
from metods_plugins.meta_optimizers.a2c import A2CMetaOptimizer, generalized_advantages
from metods_plugins.plasticity.metods import MetODSRule
from metods_plugins.readout.categorical import CategoricalReadout
from metods_plugins.tasks.harlow import HarlowTasks

from metods_core.agent import Agent, AgentConfig
from metods_core.interfaces import OuterBatch
from metods_core.rollout import Lifetimes

GAMMA = 0.5
# Two lifetimes over three steps: task 0 runs all three, task 1 ends after step 1. Task 1's
# reward (100) and value (3) at the dead step must not leak into its advantages.
REWARDS = torch.tensor([[1.0, 2.0], [0.0, 4.0], [2.0, 100.0]])
VALUES = torch.tensor([[0.5, 1.0], [2.0, 2.0], [1.0, 3.0]])
ALIVE = torch.tensor([[True, True], [True, True], [True, False]])


def test_gae_lambda_one_is_returns_minus_values() -> None:
    """lambda = 1: discounted returns (0 after a lifetime's end) minus values.

    Task 0: G = (1 + 0.5 * 0 + 0.25 * 2, 0 + 0.5 * 2, 2) = (1.5, 1, 2) -> (1, -1, 1).
    Task 1: G = (2 + 0.5 * 4, 4) = (4, 4) -> (3, 2), then 0 at the dead step.
    """
    advantages = generalized_advantages(REWARDS, VALUES, ALIVE, GAMMA, 1.0)
    expected = torch.tensor([[1.0, 3.0], [-1.0, 2.0], [1.0, 0.0]])
    torch.testing.assert_close(advantages, expected)


def test_gae_lambda_zero_is_td_errors() -> None:
    """lambda = 0: one-step TD errors r + gamma * V(next) - V, with V(next) = 0 at the end.

    Task 0: (1 + 0.5 * 2 - 0.5, 0 + 0.5 * 1 - 2, 2 - 1) = (1.5, -1.5, 1).
    Task 1: (2 + 0.5 * 2 - 1, 4 - 2) = (2, 2), then 0 at the dead step.
    """
    advantages = generalized_advantages(REWARDS, VALUES, ALIVE, GAMMA, 0.0)
    expected = torch.tensor([[1.5, 2.0], [-1.5, 2.0], [1.0, 0.0]])
    torch.testing.assert_close(advantages, expected)


def test_gae_intermediate_lambda_mixes_td_errors() -> None:
    """A_t = delta_t + gamma * lambda * A_{t+1} within a lifetime (lambda = 0.5 here).

    Task 0: A2 = 1, A1 = -1.5 + 0.25 * 1 = -1.25, A0 = 1.5 + 0.25 * -1.25 = 1.1875.
    Task 1: A1 = 2, A0 = 2 + 0.25 * 2 = 2.5.
    """
    advantages = generalized_advantages(REWARDS, VALUES, ALIVE, GAMMA, 0.5)
    expected = torch.tensor([[1.1875, 2.5], [-1.25, 2.0], [1.0, 0.0]])
    torch.testing.assert_close(advantages, expected)


def test_gae_matches_a_per_task_loop_on_random_lifetimes() -> None:
    """lambda = 1 equals returns minus values and lambda = 0 equals TD errors, task by task,
    for random lifetime lengths (zero after each lifetime's end)."""
    generator = torch.Generator().manual_seed(0)
    steps, batch, gamma = 7, 5, 0.9
    rewards = torch.randn(steps, batch, generator=generator, dtype=torch.float64)
    values = torch.randn(steps, batch, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([7, 1, 4, 6, 3])
    alive = torch.arange(steps).unsqueeze(1) < lengths
    mc = generalized_advantages(rewards, values, alive, gamma, 1.0)
    td = generalized_advantages(rewards, values, alive, gamma, 0.0)
    for task in range(batch):
        end = int(lengths[task])
        ret = 0.0
        for t in reversed(range(steps)):
            if t >= end:
                assert mc[t, task] == 0 and td[t, task] == 0
                continue
            ret = float(rewards[t, task]) + gamma * ret
            next_value = float(values[t + 1, task]) if t + 1 < end else 0.0
            delta = float(rewards[t, task]) + gamma * next_value - float(values[t, task])
            assert float(mc[t, task]) == pytest.approx(ret - float(values[t, task]))
            assert float(td[t, task]) == pytest.approx(delta)


def test_loss_averages_over_running_steps() -> None:
    """policy, value and entropy terms are means over the 5 running steps of the example:
    policy -(1 - 1 + 1 + 3 + 2) / 5, value 0.5 * (1 + 1 + 1 + 9 + 4) / 5, entropy 2."""
    lifetimes = Lifetimes(
        rewards=REWARDS * ALIVE,
        values=VALUES,
        log_probs=torch.ones(3, 2),
        entropies=torch.full((3, 2), 2.0),
        alive=ALIVE,
        metrics={},
    )
    config = A2CMetaOptimizer.Config(gamma=GAMMA, gae_lambda=1.0, value_coef=0.1, entropy_coef=0.03)
    losses = A2CMetaOptimizer(config).loss(lifetimes)
    torch.testing.assert_close(losses["policy_loss"], torch.tensor(-1.2))
    torch.testing.assert_close(losses["value_loss"], torch.tensor(1.6))
    torch.testing.assert_close(losses["entropy"], torch.tensor(2.0))
    torch.testing.assert_close(losses["loss"], torch.tensor(-1.2 + 0.1 * 1.6 - 0.03 * 2.0))


def example_lifetimes(log_probs: torch.Tensor | None = None) -> Lifetimes:
    """The two-task example above, with zero critic values."""
    return Lifetimes(
        rewards=REWARDS * ALIVE,
        values=torch.zeros(3, 2),
        log_probs=torch.ones(3, 2) if log_probs is None else log_probs,
        entropies=torch.zeros(3, 2),
        alive=ALIVE,
        metrics={},
    )


def test_reward_scale_scales_advantages_and_critic_targets() -> None:
    """With zero values, scaling rewards by 0.1 scales the policy loss by 0.1 and the
    critic's squared error by 0.01; the lifetimes' rewards themselves are untouched."""
    lifetimes = example_lifetimes()
    plain = A2CMetaOptimizer(A2CMetaOptimizer.Config(gamma=GAMMA)).loss(lifetimes)
    config = A2CMetaOptimizer.Config(gamma=GAMMA, reward_scale=0.1)
    scaled = A2CMetaOptimizer(config).loss(lifetimes)
    torch.testing.assert_close(scaled["policy_loss"], 0.1 * plain["policy_loss"])
    torch.testing.assert_close(scaled["value_loss"], 0.01 * plain["value_loss"])
    torch.testing.assert_close(lifetimes.rewards, REWARDS * ALIVE)


def test_normalized_advantages_have_zero_mean_and_unit_std_over_running_steps() -> None:
    """The policy loss with log-probs 1 is minus the mean advantage (0 once standardised);
    with log-probs equal to the standardised advantages it is minus their variance (1)."""
    config = A2CMetaOptimizer.Config(gamma=GAMMA, normalize_advantages=True)
    optimizer = A2CMetaOptimizer(config)
    assert abs(float(optimizer.loss(example_lifetimes())["policy_loss"])) < 1e-6
    raw = generalized_advantages(REWARDS * ALIVE, torch.zeros(3, 2), ALIVE, GAMMA, 1.0)
    running = raw[ALIVE]
    standardised = torch.zeros(3, 2)
    standardised[ALIVE] = (running - running.mean()) / running.std(unbiased=False)
    losses = optimizer.loss(example_lifetimes(log_probs=standardised))
    torch.testing.assert_close(losses["policy_loss"], torch.tensor(-1.0))


def tiny_agent(**rule: object) -> tuple[Agent, HarlowTasks]:
    """Return a MetODS agent (N = 8, S = 2) on a 20-step Harlow task."""
    tasks = HarlowTasks(HarlowTasks.Config(max_steps=20))
    torch.manual_seed(0)
    plasticity = MetODSRule(MetODSRule.Config(recursion_steps=2, **rule), 8)
    readout = CategoricalReadout(CategoricalReadout.Config(), 8, tasks.action_space)
    agent = Agent(
        AgentConfig(hidden=8), tasks.observation_space, tasks.action_space, plasticity, readout
    )
    return agent, tasks


def test_gradient_norms_by_part_make_up_the_global_norm() -> None:
    """grad_norm/encoder, /rule and /readout are read before clipping: their root sum of
    squares is the clipped-at global grad_norm; without gradients they are 0."""
    agent, tasks = tiny_agent()
    assert all(value.item() == 0.0 for value in agent.gradient_norms().values())
    meta_optimizer = A2CMetaOptimizer(A2CMetaOptimizer.Config(max_grad_norm=1e-3))
    batch = OuterBatch(
        tasks=tasks.sample(4, "train", torch.Generator().manual_seed(0)),
        build_env=tasks.make_env,
        optimizer=meta_optimizer.configure_optimizer(agent),
        backward=lambda loss: loss.backward(),
        generator=torch.Generator().manual_seed(1),
    )
    metrics = meta_optimizer.training_step(agent, batch)
    parts = [metrics[f"grad_norm/{part}"] for part in ("encoder", "rule", "readout")]
    assert all(part > 0 for part in parts)
    torch.testing.assert_close(torch.stack(parts).norm(), metrics["grad_norm"])
    assert metrics["grad_norm"] > 1e-3  # so the parts were read before the clip


def test_training_step_updates_and_reports_finite_metrics() -> None:
    """One outer step changes every trainable parameter and returns finite 0-dim metrics."""
    agent, tasks = tiny_agent()
    meta_optimizer = A2CMetaOptimizer(A2CMetaOptimizer.Config(lr=1e-2))
    optimizer = meta_optimizer.configure_optimizer(agent)
    batch = OuterBatch(
        tasks=tasks.sample(4, "train", torch.Generator().manual_seed(0)),
        build_env=tasks.make_env,
        optimizer=optimizer,
        backward=lambda loss: loss.backward(),
        generator=torch.Generator().manual_seed(1),
    )
    before = {name: p.detach().clone() for name, p in agent.named_parameters()}
    metrics = meta_optimizer.training_step(agent, batch)
    for name in ("loss", "policy_loss", "value_loss", "entropy", "grad_norm", "env_steps"):
        assert name in metrics
    assert {"grad_norm/encoder", "grad_norm/rule", "grad_norm/readout"} <= metrics.keys()
    assert "episode_reward" in metrics and "accuracy_by_presentation" not in metrics
    for name, value in metrics.items():
        assert value.dim() == 0 and not value.requires_grad, name
        if name not in ("accuracy_first", "accuracy_later"):  # NaN: no choice in 20 steps
            assert torch.isfinite(value), name
    assert metrics["env_steps"] == 4 * 20  # six presentations need more than 20 steps
    unchanged = [n for n, p in agent.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, f"parameters not updated: {unchanged}"


def test_optimizer_skips_frozen_parameters() -> None:
    """configure_optimizer holds only parameters with requires_grad (frozen kappa excluded)."""
    agent, _ = tiny_agent(learn_kappa=False)
    optimizer = A2CMetaOptimizer(A2CMetaOptimizer.Config()).configure_optimizer(agent)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(k) not in held for k in agent.rule.kappa)
    assert all(id(b) in held for b in agent.rule.beta)
    assert isinstance(optimizer, torch.optim.Adam)
