"""Run an agent through whole lifetimes of a batched environment, and replay recorded ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from metods_core.agent import Agent, Evaluation
from metods_core.interfaces import BatchedEnv, State


@dataclass
class LifetimeRecord:
    """The agent's inputs and actions over ``steps`` steps of ``batch`` lifetimes.

    Enough to replay the lifetimes through the agent (with new meta-parameters) from its
    initial plastic state, without the environment: step ``t``'s inputs are what the agent
    saw at ``t``, ``actions[t]`` what it did.

    Attributes:
        observations: ``(steps, batch, *obs_shape)``.
        previous_actions: encoded previous actions ``(steps, batch, action_size)``.
        previous_rewards: ``(steps, batch)``.
        new_episode: bool ``(steps, batch)``, set where a new episode of the lifetime starts.
        actions: the read-out's samples ``(steps, batch, ...)``, what the policy scored (the
            environment took ``readout.env_action`` of them).
    """

    observations: torch.Tensor
    previous_actions: torch.Tensor
    previous_rewards: torch.Tensor
    new_episode: torch.Tensor
    actions: torch.Tensor

    def select(self, lifetimes: torch.Tensor) -> LifetimeRecord:
        """Return the record of the lifetimes indexed by ``lifetimes`` ``(k,)`` (whole, in time)."""
        return LifetimeRecord(
            observations=self.observations[:, lifetimes],
            previous_actions=self.previous_actions[:, lifetimes],
            previous_rewards=self.previous_rewards[:, lifetimes],
            new_episode=self.new_episode[:, lifetimes],
            actions=self.actions[:, lifetimes],
        )


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
        record: the inputs and actions, when the rollout was asked to record them.
    """

    rewards: torch.Tensor
    values: torch.Tensor
    log_probs: torch.Tensor
    entropies: torch.Tensor
    alive: torch.Tensor
    metrics: dict[str, torch.Tensor]
    record: LifetimeRecord | None = None

    @property
    def env_steps(self) -> torch.Tensor:
        """Number of environment steps taken by running lifetimes (a 0-dim tensor)."""
        return self.alive.sum()


@dataclass
class Replay:
    """The agent's outputs on recorded lifetimes: each ``(steps, batch)``."""

    log_probs: torch.Tensor
    values: torch.Tensor
    entropies: torch.Tensor


def run_lifetimes(
    agent: Agent,
    env: BatchedEnv,
    generator: torch.Generator,
    greedy: bool = False,
    record: bool = False,
    freeze_memory: int | None = None,
) -> Lifetimes:
    """Run every lifetime of ``env`` to its end, sampling actions with ``generator``.

    A lifetime of several episodes (``info["episode_boundary"]``) keeps the agent's plastic
    state across boundaries and tells the agent where each new episode starts.

    ``freeze_memory`` K (a lesion, for evaluation) holds the agent's state from step K of the
    lifetime on: every later step is given the state reached after the first K steps and its
    new state is dropped, so the agent reads what it stored but stores nothing more. K = 0
    gives every step the initial state: a memoryless policy with the same meta-parameters (it
    still sees the previous action and reward). ``None`` (default): no lesion. It cannot be
    recorded: a replay (``replay_lifetimes``) does not hold the state.

    The loop makes no host-device synchronisation: finished lifetimes keep stepping and are
    masked out, so the loop always runs ``env.lifetime_steps`` steps. With ``record`` the
    agent's inputs and actions are kept in ``Lifetimes.record`` for ``replay_lifetimes``.
    """
    observation, _ = env.reset()
    batch = env.num_envs
    device = observation.device
    if freeze_memory is not None and record:
        raise ValueError("freeze_memory is an evaluation lesion: its rollouts cannot be recorded")
    if freeze_memory is not None and not 0 <= freeze_memory < env.lifetime_steps:
        raise ValueError(
            f"freeze_memory must be in [0, {env.lifetime_steps}) (the lifetime's steps), "
            f"got {freeze_memory}"
        )
    state = agent.init_state(batch)
    held: State | None = None  # the state every step gets once the memory is frozen
    previous_action = torch.zeros(batch, agent.action_size, device=device)
    previous_reward = torch.zeros(batch, device=device)
    running = torch.ones(batch, dtype=torch.bool, device=device)
    new_episode = torch.zeros(batch, dtype=torch.bool, device=device)
    rewards, values, log_probs, entropies, alive = [], [], [], [], []
    inputs: list[tuple[torch.Tensor, ...]] = []
    # The whole lifetime's action noise in one draw, sampled inside the agent's step.
    noise = (
        None if greedy else agent.readout.draw_noise((env.lifetime_steps, batch), generator, device)
    )
    for t in range(env.lifetime_steps):
        if t == freeze_memory:
            held = state
        if held is not None:
            state = held
        if noise is not None:
            acted = agent.act(
                observation, previous_action, previous_reward, state, new_episode, noise[t]
            )
            action, env_action, value, state = (
                acted.action,
                acted.env_action,
                acted.value,
                acted.state,
            )
            log_prob, entropy, encoded_action = acted.log_prob, acted.entropy, acted.encoded_action
        else:
            distribution, value, state = agent.step(
                observation, previous_action, previous_reward, state, new_episode
            )
            if greedy:
                action = agent.readout.mode(distribution)
            else:
                action = agent.readout.sample(distribution, generator)
            log_prob, entropy = distribution.log_prob(action), distribution.entropy()
            env_action = agent.readout.env_action(action)
            encoded_action = agent.encode_action(env_action)
        if record:
            inputs.append((observation, previous_action, previous_reward, new_episode, action))
        observation, reward, terminated, truncated, info = env.step(env_action)
        alive.append(running)
        rewards.append(reward * running)
        values.append(value)
        log_probs.append(log_prob)
        entropies.append(entropy)
        running = running & ~(terminated | truncated)
        previous_action = encoded_action
        previous_reward = reward
        # The plastic state is kept across an episode boundary; the agent is only told of it.
        new_episode = info.get("episode_boundary", torch.zeros_like(running))
    recorded = None
    if record:
        columns = [torch.stack([step[k] for step in inputs]) for k in range(5)]
        recorded = LifetimeRecord(*(column.detach() for column in columns))
    return Lifetimes(
        rewards=torch.stack(rewards),
        values=torch.stack(values),
        log_probs=torch.stack(log_probs),
        entropies=torch.stack(entropies),
        alive=torch.stack(alive),
        metrics=env.lifetime_metrics(),
        record=recorded,
    )


def replay_steps(
    agent: Agent,
    record: LifetimeRecord,
    state: State,
    start: int,
    stop: int,
    from_lifetime_start: bool = True,
) -> tuple[Replay, State]:
    """Replay steps ``start`` to ``stop`` (excluded) of ``record`` from plastic ``state``.

    Returns the outputs ``(stop - start, batch)`` and the state after step ``stop - 1``.
    Gradients flow to the meta-parameters and to ``state`` (BPTT over the span).
    Steps go ``agent.replay_span`` at a time through ``Agent.evaluate_span`` (what is left
    over, one at a time through ``Agent.evaluate_actions``): the same outputs, fewer calls.

    When ``from_lifetime_start`` (the record's step ``t`` is step ``t`` of its lifetimes) and
    the rule holds its state from step K on (``PlasticityRule.held_from``), the steps from K
    on are computed at once by ``Agent.evaluate_held``: the same outputs and gradients, up to
    the order of floating-point sums. Windows cut from the middle of lifetimes pass False.
    """
    span = agent.replay_span
    held_from = agent.rule.held_from() if from_lifetime_start else None
    sequential_stop = stop if held_from is None else min(stop, max(start, held_from))
    scores: list[Evaluation] = []
    t = start
    while t < sequential_stop:
        if span > 1 and sequential_stop - t >= span:
            scored = _score(agent.evaluate_span, record, slice(t, t + span), state)
            t += span
        else:
            one = _score(agent.evaluate_actions, record, t, state)
            scored = Evaluation(
                log_prob=one.log_prob.unsqueeze(0),
                entropy=one.entropy.unsqueeze(0),
                value=one.value.unsqueeze(0),
                state=one.state,
            )
            t += 1
        state = scored.state
        scores.append(scored)
    if sequential_stop < stop:
        scored = _score(agent.evaluate_held, record, slice(sequential_stop, stop), state)
        state = scored.state
        scores.append(scored)
    replay = Replay(
        torch.cat([scored.log_prob for scored in scores]),
        torch.cat([scored.value for scored in scores]),
        torch.cat([scored.entropy for scored in scores]),
    )
    return replay, state


def _score(
    method: Callable[..., Evaluation], record: LifetimeRecord, steps: int | slice, state: State
) -> Evaluation:
    """Call a replay method of the agent (``evaluate_actions``, ``evaluate_span`` or
    ``evaluate_held``) on the recorded inputs and actions of ``steps``, from ``state``."""
    return method(
        record.observations[steps],
        record.previous_actions[steps],
        record.previous_rewards[steps],
        state,
        record.new_episode[steps],
        record.actions[steps],
    )


def replay_lifetimes(agent: Agent, record: LifetimeRecord) -> Replay:
    """Replay whole recorded lifetimes from the agent's initial plastic state.

    With unchanged meta-parameters the outputs equal those of the recorded rollout; with
    updated ones they are what the new policy would have computed on the same inputs
    (PPO's probability ratio). Gradients flow through the whole lifetime.
    """
    steps, batch = record.previous_rewards.shape
    replay, _ = replay_steps(agent, record, agent.init_state(batch), 0, steps)
    return replay
