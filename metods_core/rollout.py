"""Run an agent through whole lifetimes of a batched environment."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metods_core.agent import Agent
from metods_core.interfaces import BatchedEnv


@dataclass
class Lifetimes:
    """What happened in ``batch`` lifetimes of at most ``steps`` steps.

    Attributes:
        rewards: ``(steps, batch)``, zero after a lifetime ended.
        values: critic estimates ``(steps, batch)``.
        log_probs: log-probabilities of the actions taken ``(steps, batch)``.
        entropies: policy entropies ``(steps, batch)``.
        alive: ``(steps, batch)`` bool, whether the step belongs to a running lifetime.
        metrics: the task family's per-task metrics at the end (``BatchedEnv.lifetime_metrics``).
    """

    rewards: torch.Tensor
    values: torch.Tensor
    log_probs: torch.Tensor
    entropies: torch.Tensor
    alive: torch.Tensor
    metrics: dict[str, torch.Tensor]

    @property
    def env_steps(self) -> torch.Tensor:
        """Number of environment steps taken by running lifetimes (a 0-dim tensor)."""
        return self.alive.sum()


def run_lifetimes(
    agent: Agent, env: BatchedEnv, generator: torch.Generator, greedy: bool = False
) -> Lifetimes:
    """Run every lifetime of ``env`` to its end, sampling actions with ``generator``.

    A lifetime of several episodes (``info["episode_boundary"]``) keeps the agent's plastic
    state across boundaries and tells the agent where each new episode starts.
    The loop makes no host-device synchronisation: finished lifetimes keep stepping and are
    masked out, so the loop always runs ``env.lifetime_steps`` steps.
    """
    observation, _ = env.reset()
    batch = env.num_envs
    device = observation.device
    state = agent.init_state(batch)
    previous_action = torch.zeros(batch, agent.action_size, device=device)
    previous_reward = torch.zeros(batch, device=device)
    running = torch.ones(batch, dtype=torch.bool, device=device)
    new_episode = torch.zeros(batch, dtype=torch.bool, device=device)
    rewards, values, log_probs, entropies, alive = [], [], [], [], []
    for _ in range(env.lifetime_steps):
        distribution, value, state = agent.step(
            observation, previous_action, previous_reward, state, new_episode
        )
        if greedy:
            action = agent.readout.mode(distribution)
        else:
            action = agent.readout.sample(distribution, generator)
        observation, reward, terminated, truncated, info = env.step(action)
        alive.append(running)
        rewards.append(reward * running)
        values.append(value)
        log_probs.append(distribution.log_prob(action))
        entropies.append(distribution.entropy())
        running = running & ~(terminated | truncated)
        previous_action = agent.encode_action(action)
        previous_reward = reward
        # The plastic state is kept across an episode boundary; the agent is only told of it.
        new_episode = info.get("episode_boundary", torch.zeros_like(running))
    return Lifetimes(
        rewards=torch.stack(rewards),
        values=torch.stack(values),
        log_probs=torch.stack(log_probs),
        entropies=torch.stack(entropies),
        alive=torch.stack(alive),
        metrics=env.lifetime_metrics(),
    )
