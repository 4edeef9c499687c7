"""Run a population of agents, one set of meta-parameters each, in one batched pass per step.

The population's parameters are stacked in a leading member dimension ``P`` and the agent's
step is mapped over it with ``torch.func.vmap`` of ``torch.func.functional_call``: one call
per environment step runs every member on every task. Members share the tasks (the env holds
``tasks.repeat(P)``, member-major) and the action noise: sampling runs inside the mapped
function with ``randomness="same"``, so member ``p`` draws exactly the noise a lone agent
with ``p``'s parameters draws from the same generator on the same tasks (common random
numbers; ``tests/test_es.py`` checks the equality). The read-out's ``Distribution`` never
leaves the mapped function: only the sampled actions do.

Covered rules (tested): metods, static, rnn, gru, hebbian, neuromodulated, fast_weights with
the categorical and Gaussian read-outs (rnn and gru through vmap's slower per-member fallback
for their fused cells). lstm is refused with ``PopulationUnsupportedError``: ``aten::lstm_cell``
has no batching rule. The env's own randomness is shared as well: an env of
``tasks.repeat(P)`` draws it for the base tasks and tiles it (``TaskBatch.copies``, checked by
the task conformance suite), so every member lives its tasks under the same dice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from metods_core import Agent, BatchedEnv, MetodsError, State


class PopulationUnsupportedError(MetodsError):
    """The agent's step cannot be mapped over a population with ``torch.func.vmap``."""


class _InitState(nn.Module):
    """``forward(batch_size)`` is the agent's ``init_state`` (so functional_call can map it)."""

    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self.agent = agent

    def forward(self, batch_size: int) -> State:
        return self.agent.init_state(batch_size)


class _Memory(nn.Module):
    """``forward(...)``: encoder f and the rule's step, the part of ``Agent.step`` before g.

    Mirrors ``Agent.step`` up to the read-out (the equality test against ``run_lifetimes``
    guards the copy); split off so that it can be compiled apart from the read-out, whose
    sampling draws from a generator.
    """

    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self.agent = agent

    def forward(
        self,
        observation: torch.Tensor,
        previous_action: torch.Tensor,
        previous_reward: torch.Tensor,
        state: State,
        new_episode: torch.Tensor,
    ) -> tuple[torch.Tensor, State]:
        agent = self.agent
        dtype = next(agent.encoder.parameters()).dtype
        parts = [
            observation.reshape(observation.shape[0], -1).to(dtype),
            previous_action.to(dtype),
            previous_reward.unsqueeze(-1).to(dtype),
        ]
        if agent.boundary_input:
            parts.append(new_episode.unsqueeze(-1).to(dtype))
        return agent.rule.step(agent.encoder(torch.cat(parts, dim=-1)), state)


class _SampleFromNoise(nn.Module):
    """``forward(y, noise)``: the read-out g, then the action of one sample from ``noise``."""

    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self.agent = agent

    def forward(self, output: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        distribution, _ = self.agent.readout(output)
        return self.agent.readout.env_action(
            self.agent.readout.sample_from_noise(distribution, noise)
        )


class _Sample(nn.Module):
    """``forward(y, generator)``: the read-out g, then the action of one sample drawn with
    ``generator``."""

    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self.agent = agent

    def forward(self, output: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        distribution, _ = self.agent.readout(output)
        return self.agent.readout.env_action(self.agent.readout.sample(distribution, generator))


class Population:
    """Runs populations of ``agent``'s meta-parameters; built once per agent (it caches the
    compiled population step).

    When ``trainer.compile`` compiled the agent's step, vmap maps the eager encoder + rule
    step (vmap cannot enter a compiled method) and the whole mapped step is compiled here
    (measured: 4.5x faster than eager on Harlow's population of 65 x 16 lifetimes).
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._init = _InitState(agent)
        self._memory = _Memory(agent)
        self._sample = _Sample(agent)
        self._sample_from_noise = _SampleFromNoise(agent)

        def memory(
            params: dict[str, torch.Tensor], shared: dict[str, torch.Tensor], *inputs: Any
        ) -> tuple[torch.Tensor, State]:
            return functional_call(self._memory, (params, shared), inputs)

        mapped = vmap(memory, in_dims=(0, None, 0, 0, 0, 0, 0))
        self._memory_step: Callable[..., tuple[torch.Tensor, State]] = (
            agent.compiled(mapped) if agent.step_is_compiled else mapped
        )

    def run(
        self, members: dict[str, torch.Tensor], env: BatchedEnv, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one lifetime per task and member, and return each lifetime's summed reward.

        Args:
            members: stacked meta-parameters ``(P, *shape)`` by name (as in
                ``agent.named_parameters``); the agent's own values serve for the others.
            env: a fresh env of ``tasks.repeat(P)``: ``P * B`` lifetimes, member-major.
            generator: draws the action noise, shared by all members.

        Returns:
            Summed rewards ``(P, B)`` and the number of env steps taken (a 0-dim tensor).
        """
        agent = self.agent
        size = next(iter(members.values())).shape[0]
        if env.num_envs % size:
            raise ValueError(f"the env has {env.num_envs} lifetimes, not a multiple of {size}")
        try:
            with torch.no_grad():
                return self._rollout(members, env, generator, size, env.num_envs // size)
        except RuntimeError as error:
            if "Batching rule not implemented" not in str(error):
                raise
            raise PopulationUnsupportedError(
                f"the plasticity rule {type(agent.rule).__name__} or the read-out "
                f"{type(agent.readout).__name__} uses an operation that torch.func.vmap cannot "
                f"map over a population ({error}). The es meta-optimizer covers metods, static, "
                "rnn, gru, hebbian, neuromodulated and fast_weights (not lstm, whose fused "
                "aten::lstm_cell has no batching rule); use a2c or ppo for this rule."
            ) from error

    def _rollout(
        self,
        members: dict[str, torch.Tensor],
        env: BatchedEnv,
        generator: torch.Generator,
        size: int,
        batch: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The population loop of ``run`` (no autograd, no host sync per step)."""
        agent = self.agent
        named = [*agent.named_parameters(), *agent.named_buffers()]
        shared = {f"agent.{name}": t for name, t in named if name not in members}
        stacked = {f"agent.{name}": tensor for name, tensor in members.items()}

        def init(params: dict[str, torch.Tensor]) -> State:
            return functional_call(self._init, (params, shared), (batch,))

        def act(params: dict[str, torch.Tensor], output: torch.Tensor) -> torch.Tensor:
            return functional_call(self._sample, (params, shared), (output, generator))

        def act_from_noise(
            params: dict[str, torch.Tensor], output: torch.Tensor, noise: torch.Tensor
        ) -> torch.Tensor:
            return functional_call(self._sample_from_noise, (params, shared), (output, noise))

        observation, _ = env.reset()
        total, device = env.num_envs, observation.device
        # As run_lifetimes: the lifetime's action noise in one draw, the same for every member.
        noise = agent.readout.draw_noise((env.lifetime_steps, batch), generator, device)
        sample = vmap(act, randomness="same")
        sample_from_noise = vmap(act_from_noise, in_dims=(0, 0, None))
        state = vmap(init)(stacked)
        previous_action = torch.zeros(total, agent.action_size, device=device)
        previous_reward = torch.zeros(total, device=device)
        new_episode = torch.zeros(total, dtype=torch.bool, device=device)
        running = torch.ones(total, dtype=torch.bool, device=device)
        returns = torch.zeros(total, device=device)
        steps = torch.zeros((), device=device)
        for t in range(env.lifetime_steps):
            output, state = self._memory_step(
                stacked,
                shared,
                observation.reshape(size, batch, *observation.shape[1:]),
                previous_action.reshape(size, batch, -1),
                previous_reward.reshape(size, batch),
                state,
                new_episode.reshape(size, batch),
            )
            if noise is None:
                action = sample(stacked, output)
            else:
                action = sample_from_noise(stacked, output, noise[t])
            action = action.reshape(total, *action.shape[2:])
            observation, reward, terminated, truncated, info = env.step(action)
            returns = returns + reward * running
            steps = steps + running.sum()
            running = running & ~(terminated | truncated)
            previous_action = agent.encode_action(action)
            previous_reward = reward
            new_episode = info.get("episode_boundary", torch.zeros_like(running))
        return returns.reshape(size, batch), steps


def run_population(
    agent: Agent,
    members: dict[str, torch.Tensor],
    env: BatchedEnv,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``members`` of ``agent`` on ``env`` once (see ``Population.run``)."""
    return Population(agent).run(members, env, generator)
