"""PPO meta-optimizer: exact first replay on every shipped rule, the clipped objective,
target-KL early stopping, the per-field options, conformance, and a real training run."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from metods_plugins.meta_optimizers.advantages import generalized_advantages
from metods_plugins.meta_optimizers.ppo import PPOMetaOptimizer, PPOMinibatch
from metods_plugins.readout.categorical import CategoricalReadout
from metods_plugins.tasks.harlow import HarlowTasks

from metods_core.agent import Agent, AgentConfig
from metods_core.interfaces import OuterBatch
from metods_core.registry import load_plugin
from metods_core.rollout import Lifetimes, Replay, replay_lifetimes, run_lifetimes
from metods_core.testing import check_meta_optimizer

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = 8
# Tiny configurations of every shipped plasticity rule (input size HIDDEN).
RULES: dict[str, dict[str, Any]] = {
    "metods": {"recursion_steps": 2},
    "static": {"hidden_size": 6},
    "rnn": {"hidden_size": 6},
    "gru": {"hidden_size": 6},
    "lstm": {"hidden_size": 6},
    "hebbian": {"hidden_size": 6},
    "neuromodulated": {"hidden_size": 6},
    "fast_weights": {"value_size": 4},
}


def tiny_agent(rule: str = "metods", seed: int = 0) -> tuple[Agent, HarlowTasks]:
    """Return an agent with the shipped rule ``rule`` on a 20-step Harlow task."""
    tasks = HarlowTasks(HarlowTasks.Config(max_steps=20))
    torch.manual_seed(seed)
    rule_cls = load_plugin("plasticity", rule)
    plasticity = rule_cls(rule_cls.Config(**RULES[rule]), HIDDEN)
    readout = CategoricalReadout(
        CategoricalReadout.Config(), plasticity.output_size, tasks.action_space
    )
    agent = Agent(
        AgentConfig(hidden=HIDDEN), tasks.observation_space, tasks.action_space, plasticity, readout
    )
    return agent, tasks


def outer_batch(agent: Agent, tasks: HarlowTasks, meta: PPOMetaOptimizer, n: int) -> OuterBatch:
    """Return an outer batch of ``n`` Harlow tasks outside any trainer."""
    return OuterBatch(
        tasks=tasks.sample(n, "train", torch.Generator().manual_seed(0)),
        build_env=tasks.make_env,
        optimizer=meta.configure_optimizer(agent),
        backward=lambda loss: loss.backward(),
        generator=torch.Generator().manual_seed(1),
    )


def test_rules_cover_every_shipped_rule() -> None:
    """The replay test below runs on every rule the plugins distribution registers."""
    from metods_core.registry import list_plugins

    assert set(RULES) == {info.name for info in list_plugins("plasticity")}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_first_replay_reproduces_the_rollout_exactly(rule: str) -> None:
    """Replaying the recorded lifetimes from the initial plastic state with unchanged
    meta-parameters gives the collected log-probabilities, values and entropies bit for bit
    (PPO's first ratio is exactly 1), though the rollout ran under ``no_grad``."""
    agent, tasks = tiny_agent(rule)
    env = tasks.make_env(tasks.sample(5, "train", torch.Generator().manual_seed(3)))
    with torch.no_grad():
        lifetimes = run_lifetimes(agent, env, torch.Generator().manual_seed(4), record=True)
    assert lifetimes.record is not None
    replay = replay_lifetimes(agent, lifetimes.record)
    assert replay.log_probs.requires_grad
    assert torch.equal(replay.log_probs, lifetimes.log_probs)
    assert torch.equal(replay.values, lifetimes.values)
    assert torch.equal(replay.entropies, lifetimes.entropies)
    # A minibatch (a subset of lifetimes) replays the same lifetimes; batched matrix products
    # of another batch size may round differently in the last bits, hence allclose here.
    index = torch.tensor([3, 0])
    part = replay_lifetimes(agent, lifetimes.record.select(index))
    torch.testing.assert_close(part.log_probs, lifetimes.log_probs[:, index])
    torch.testing.assert_close(part.values, lifetimes.values[:, index])


def one_step_minibatch(advantage: float, clip: float = 0.2, **config: Any) -> PPOMinibatch:
    """Return a one-step, one-lifetime minibatch with old log-probability 0."""
    zero = torch.zeros(1, 1)
    return PPOMinibatch(
        old_log_probs=zero,
        old_values=zero,
        advantages=torch.full((1, 1), advantage),
        returns=zero,
        mask=torch.ones(1, 1),
        count=torch.tensor(1.0),
        config=PPOMetaOptimizer.Config(clip=clip, **config),
    )


@pytest.mark.parametrize(
    ("ratio", "advantage", "flat"),
    [(1.5, 1.0, True), (0.5, -1.0, True), (1.5, -1.0, False), (0.5, 1.0, False), (1.1, 1.0, False)],
)
def test_clipped_surrogate_gradient(ratio: float, advantage: float, flat: bool) -> None:
    """A ratio beyond the clip range in the advantage's direction (above 1 + eps with a
    positive advantage, below 1 - eps with a negative one) gives the policy no gradient; a
    ratio beyond it against the advantage, or inside the range, gives -A * ratio."""
    log_prob = torch.tensor([[float(torch.tensor(ratio).log())]], requires_grad=True)
    replay = Replay(log_probs=log_prob, values=torch.zeros(1, 1), entropies=torch.zeros(1, 1))
    terms = one_step_minibatch(advantage).step_terms(replay, 0, 1)
    (grad,) = torch.autograd.grad(terms["policy_loss"], log_prob)
    if flat:
        assert grad.item() == 0.0
        assert terms["clip_fraction"].item() == 1.0
    else:
        assert grad.item() == pytest.approx(-advantage * ratio)


@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_exploding_ratio_gives_finite_gradients(dual_clip: float | None) -> None:
    """A log-ratio of 95 (float32's exp overflows past 88; measured 24-93 on a squashed
    cheetah policy) with a negative advantage: loss and gradient stay finite; with dual-clip 3
    the surrogate is 3 A and carries no gradient."""
    log_prob = torch.tensor([[95.0]], requires_grad=True)
    replay = Replay(log_probs=log_prob, values=torch.zeros(1, 1), entropies=torch.zeros(1, 1))
    terms = one_step_minibatch(-1.0, dual_clip=dual_clip).step_terms(replay, 0, 1)
    (grad,) = torch.autograd.grad(terms["policy_loss"], log_prob)
    assert torch.isfinite(terms["loss"]) and torch.isfinite(terms["approx_kl"])
    assert torch.isfinite(grad).all()
    if dual_clip is not None:
        assert terms["policy_loss"].item() == pytest.approx(3.0)
        assert grad.item() == 0.0


@pytest.mark.parametrize(("ratio", "advantage"), [(2.0, -1.0), (4.0, 1.0), (0.5, -1.0)])
def test_dual_clip_changes_only_large_ratios_with_negative_advantages(
    ratio: float, advantage: float
) -> None:
    """Dual-clip 3 leaves the surrogate as it was unless A < 0 and the ratio exceeds 3."""
    log_prob = torch.tensor([[float(torch.tensor(ratio).log())]])
    replay = Replay(log_probs=log_prob, values=torch.zeros(1, 1), entropies=torch.zeros(1, 1))
    plain = one_step_minibatch(advantage).step_terms(replay, 0, 1)["policy_loss"]
    dual = one_step_minibatch(advantage, dual_clip=3.0).step_terms(replay, 0, 1)["policy_loss"]
    assert dual.item() == pytest.approx(plain.item())


def test_value_clip_takes_the_larger_error() -> None:
    """With value clipping 0.5, a critic moved from 0 to 2 towards a return of 3 is charged
    the clipped error (0.5 - 3)^2 = 6.25, not its own (2 - 3)^2 = 1; unclipped it is 1."""
    replay = Replay(torch.zeros(1, 1), torch.full((1, 1), 2.0), torch.zeros(1, 1))
    minibatch = one_step_minibatch(0.0, value_clip=0.5)
    minibatch.returns = torch.full((1, 1), 3.0)
    assert minibatch.step_terms(replay, 0, 1)["value_loss"].item() == pytest.approx(0.5 * 6.25)
    minibatch.config = PPOMetaOptimizer.Config()
    assert minibatch.step_terms(replay, 0, 1)["value_loss"].item() == pytest.approx(0.5 * 1.0)


def collected(agent: Agent, tasks: HarlowTasks, n: int = 6) -> Lifetimes:
    """Return ``n`` recorded lifetimes of ``agent``."""
    env = tasks.make_env(tasks.sample(n, "train", torch.Generator().manual_seed(3)))
    with torch.no_grad():
        return run_lifetimes(agent, env, torch.Generator().manual_seed(4), record=True)


def test_step_terms_add_up_over_spans() -> None:
    """The terms over [0, 7) and [7, T) add up to those over [0, T): a chunked replay can
    call ``step_loss`` on each chunk (every term is normalised by the whole count)."""
    agent, tasks = tiny_agent()
    lifetimes = collected(agent, tasks)
    meta = PPOMetaOptimizer(PPOMetaOptimizer.Config(value_clip=0.1))
    advantages, returns = meta.advantages(lifetimes)
    index = torch.arange(6)
    minibatch = meta.minibatch(lifetimes, advantages, returns, index)
    assert lifetimes.record is not None
    replay = replay_lifetimes(agent, lifetimes.record)
    replay = Replay(replay.log_probs + 0.1, replay.values - 0.3, replay.entropies)
    whole = minibatch.step_terms(replay, 0, 20)
    head = Replay(replay.log_probs[:7], replay.values[:7], replay.entropies[:7])
    tail = Replay(replay.log_probs[7:], replay.values[7:], replay.entropies[7:])
    parts = [minibatch.step_terms(head, 0, 7), minibatch.step_terms(tail, 7, 20)]
    for name, value in whole.items():
        torch.testing.assert_close(parts[0][name] + parts[1][name], value)
    assert minibatch.step_loss(replay, 0, 20) == whole["loss"]


def test_advantages_reward_scale_and_normalisation() -> None:
    """Advantages are GAE(lambda) of the scaled rewards and detached values; returns add the
    values back; a normalised minibatch has mean 0 and standard deviation 1 over its steps."""
    agent, tasks = tiny_agent()
    lifetimes = collected(agent, tasks)
    config = PPOMetaOptimizer.Config(reward_scale=0.5, gamma=0.8, gae_lambda=0.7)
    advantages, returns = PPOMetaOptimizer(config).advantages(lifetimes)
    expected = generalized_advantages(
        0.5 * lifetimes.rewards, lifetimes.values, lifetimes.alive, 0.8, 0.7
    )
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + lifetimes.values)
    index = torch.tensor([1, 4, 5])
    normalised = PPOMetaOptimizer(config).minibatch(lifetimes, advantages, returns, index)
    running = normalised.advantages[normalised.mask.bool()]
    assert abs(running.mean().item()) < 1e-5
    assert running.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    raw_config = PPOMetaOptimizer.Config(normalize_advantages=False)
    raw = PPOMetaOptimizer(raw_config).minibatch(lifetimes, advantages, returns, index)
    torch.testing.assert_close(raw.advantages, advantages[:, index])


def test_epochs_minibatches_and_target_kl() -> None:
    """Without a KL target every epoch runs; with a tiny one, the first minibatch (ratio 1,
    KL exactly 0) updates and the second, now off-policy, stops the outer step."""
    agent, tasks = tiny_agent()
    meta = PPOMetaOptimizer(PPOMetaOptimizer.Config(lr=1e-2, epochs=3, minibatches=2))
    metrics = meta.training_step(agent, outer_batch(agent, tasks, meta, 4))
    assert metrics["epochs_done"].item() == 3.0
    agent, tasks = tiny_agent()
    config = PPOMetaOptimizer.Config(lr=1e-2, epochs=3, minibatches=2, target_kl=1e-12)
    meta = PPOMetaOptimizer(config)
    metrics = meta.training_step(agent, outer_batch(agent, tasks, meta, 4))
    assert metrics["epochs_done"].item() == 0.5
    # Only the first, on-policy minibatch was counted (a replay of a sub-batch may differ from
    # the rollout in the last bits, hence not exactly 0).
    assert metrics["approx_kl"].item() < 1e-12


def test_training_step_metrics() -> None:
    """An outer step reports every metric, detached and 0-dim, and the task's metrics."""
    agent, tasks = tiny_agent()
    meta = PPOMetaOptimizer(PPOMetaOptimizer.Config(minibatches=8))  # more than the tasks
    metrics = meta.training_step(agent, outer_batch(agent, tasks, meta, 3))
    names = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
    parts = ("grad_norm/encoder", "grad_norm/rule", "grad_norm/readout")
    for name in (*names, *parts, "epochs_done", "grad_norm", "env_steps", "episode_reward"):
        assert name in metrics and metrics[name].dim() == 0, name
        assert not metrics[name].requires_grad and torch.isfinite(metrics[name]), name
    assert metrics["env_steps"].item() == 3 * 20
    assert metrics["epochs_done"].item() == 4.0  # three minibatches of one lifetime each


@pytest.mark.parametrize("limit", [None, 1e-9])
def test_skip_grad_norm_drops_updates_above_it(limit: float | None) -> None:
    """Above ``skip_grad_norm`` no Adam step is taken (parameters and Adam state unchanged) and
    ``skipped_updates`` is 1; without it every update steps and the fraction is 0."""
    agent, tasks = tiny_agent()
    meta = PPOMetaOptimizer(PPOMetaOptimizer.Config(minibatches=2, skip_grad_norm=limit))
    before = {name: p.detach().clone() for name, p in agent.named_parameters()}
    batch = outer_batch(agent, tasks, meta, 4)
    metrics = meta.training_step(agent, batch)
    changed = any(not torch.equal(before[n], p) for n, p in agent.named_parameters())
    assert changed == (limit is None)
    assert metrics["skipped_updates"].item() == (0.0 if limit is None else 1.0)
    assert (len(batch.optimizer.state) == 0) == (limit is not None)
    assert metrics["grad_norm"].item() > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"epochs": 2, "minibatches": 3, "value_clip": 0.2, "target_kl": 0.5, "skip_grad_norm": 1e6},
    ],
    ids=["defaults", "options"],
)
def test_conformance(config: dict[str, Any]) -> None:
    """PPO passes the meta-optimizer conformance suite, with its defaults and its options
    (slow: the suite trains inside Lightning, resumes and runs 2-process DDP)."""
    check_meta_optimizer(PPOMetaOptimizer, **config)


def test_recipe_trains_through_lightning(tmp_path: Path) -> None:
    """The shipped PPO recipe trains three outer steps through the real Trainer: three rows
    of outer-step metrics, two epochs each, and a checkpoint."""
    from metods_core.recipe import load_recipe
    from metods_core.training import train_recipe

    overrides = [
        "data.batch_tasks=4",
        "task.max_steps=15",
        "trainer.max_steps=3",
        "trainer.log_every_n_steps=1",
        "trainer.compile=false",
        "logger.wandb.mode=disabled",
    ]
    recipe = load_recipe(ROOT / "recipes" / "harlow" / "metods_ppo.yaml", overrides)
    run_dir = train_recipe(recipe, tmp_path / "run")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader((run_dir / "logs" / "version_0" / "metrics.csv").open()))
    epochs = [row["train/epochs_done"] for row in rows if row.get("train/epochs_done")]
    assert len(epochs) == 3
    expected = float(recipe.meta_optimizer.config.epochs)  # type: ignore[attr-defined]
    assert all(float(value) == expected for value in epochs)


def test_loss_weights_value_and_entropy_terms() -> None:
    """loss = policy_loss + value_coef * value_loss - entropy_coef * entropy."""
    replay = Replay(torch.zeros(1, 1), torch.full((1, 1), 2.0), torch.full((1, 1), 0.7))
    minibatch = one_step_minibatch(1.5, value_coef=0.25, entropy_coef=0.1)
    terms = minibatch.step_terms(replay, 0, 1)
    assert terms["policy_loss"].item() == pytest.approx(-1.5)
    assert terms["value_loss"].item() == pytest.approx(2.0)
    assert terms["entropy"].item() == pytest.approx(0.7)
    assert terms["loss"].item() == pytest.approx(-1.5 + 0.25 * 2.0 - 0.1 * 0.7)
