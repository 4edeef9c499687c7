"""Small float64 agents on Harlow and their recorded lifetimes, for the replay tests
(``test_bptt.py``, ``test_windows.py``)."""

from __future__ import annotations

import torch
from metods_plugins.plasticity.metods import MetODSRule
from metods_plugins.plasticity.recurrent import LSTMRule
from metods_plugins.readout.categorical import CategoricalReadout
from metods_plugins.tasks.harlow import HarlowTasks

from metods_core.agent import Agent, AgentConfig
from metods_core.interfaces import OuterBatch, PlasticityRule
from metods_core.rollout import LifetimeRecord, Lifetimes, Replay, replay_lifetimes, run_lifetimes
from metods_core.testing.fakes import FakeRule

STEPS = 23
"""Steps per lifetime: a prime, so no chunk or window length divides it."""
HIDDEN = 6
HELD_FROM = 7
"""``write_steps`` of the ``metods_held`` agent: its replays hold W from step 7 of 23 on."""


def harlow_agent(rule_name: str) -> tuple[Agent, HarlowTasks]:
    """Return a float64 agent with a MetODS (S = 2, learned W_0; ``metods_held``: written in
    the first ``HELD_FROM`` steps only), LSTM or fake rule."""
    tasks = HarlowTasks(HarlowTasks.Config(max_steps=STEPS, trials=100))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        rule: PlasticityRule
        if rule_name == "metods":
            rule = MetODSRule(MetODSRule.Config(recursion_steps=2), HIDDEN)
        elif rule_name == "metods_held":  # W written in the first HELD_FROM steps only
            config = MetODSRule.Config(recursion_steps=2, write_steps=HELD_FROM)
            rule = MetODSRule(config, HIDDEN)
        elif rule_name == "lstm":
            rule = LSTMRule(LSTMRule.Config(), HIDDEN)
        else:
            rule = FakeRule(FakeRule.Config(), HIDDEN)
        readout = CategoricalReadout(CategoricalReadout.Config(), HIDDEN, tasks.action_space)
        agent = Agent(
            AgentConfig(hidden=HIDDEN), tasks.observation_space, tasks.action_space, rule, readout
        )
    return agent.double(), tasks


def record_of(agent: Agent, tasks: HarlowTasks, batch: int = 3) -> LifetimeRecord:
    """Record ``batch`` lifetimes of ``STEPS`` steps."""
    task_batch = tasks.sample(batch, "train", torch.Generator().manual_seed(0))
    with torch.no_grad():
        lifetimes = run_lifetimes(
            agent, tasks.make_env(task_batch), torch.Generator().manual_seed(1), record=True
        )
    assert lifetimes.record is not None
    return lifetimes.record


def harlow_outer_batch(
    tasks: HarlowTasks, optimizer: torch.optim.Optimizer, size: int
) -> OuterBatch:
    """Return an outer batch of ``size`` Harlow tasks outside any trainer (seeds 0 and 1)."""
    return OuterBatch(
        tasks=tasks.sample(size, "train", torch.Generator().manual_seed(0)),
        build_env=tasks.make_env,
        optimizer=optimizer,
        backward=lambda loss: loss.backward(),
        generator=torch.Generator().manual_seed(1),
    )


def replay_loss_gradients(agent: Agent, replay: Replay) -> list[torch.Tensor]:
    """Return the meta-gradients of a loss on every output of ``replay``."""
    loss = -replay.log_probs.sum() + replay.values.square().sum() - replay.entropies.sum()
    return list(torch.autograd.grad(loss, [p for p in agent.parameters() if p.requires_grad]))


def assert_compiled_replay_matches(compiled: Agent, eager: Agent, lifetimes: Lifetimes) -> None:
    """Both agents' whole-lifetime replays give the recorded rollout's log-probabilities and
    values, and the compiled replay the eager one's meta-gradients (1e-6, float32)."""
    assert lifetimes.record is not None
    gradients = []
    for agent in (compiled, eager):
        replay = replay_lifetimes(agent, lifetimes.record)
        torch.testing.assert_close(replay.log_probs, lifetimes.log_probs, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(replay.values, lifetimes.values, rtol=1e-6, atol=1e-6)
        gradients.append(replay_loss_gradients(agent, replay))
    for got, expected in zip(*gradients, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
