"""Backprop through time over recorded lifetimes: full, checkpointed over chunks, or truncated.

Storing the autograd graph of a whole lifetime costs O(T * B * N^2) memory for a plastic
rule (DESIGN.md section 7; the paper names it as MetODS's limitation). A gradient
meta-optimizer collects its lifetimes without a graph (``torch.no_grad()``, ``record=True``),
then calls :func:`backward_through_lifetimes` with its per-step loss and ``BPTTConfig``:

- ``full``: one replay of the whole lifetime, one backward (the graph of T steps).
- ``checkpointed``: a forward pass without a graph keeps only the plastic state at every
  chunk boundary; the chunks are then recomputed in reverse order, each from its saved state,
  and backpropagated with the gradient of the state carried from the chunk after it. Same
  gradients as ``full`` (up to floating-point summation order), memory of T/K boundary states
  plus one chunk's graph, for about one more forward pass.
- ``truncated``: the state is detached every ``chunk`` steps: no gradient flows between
  chunks, and each chunk is backpropagated as soon as it is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field

from metods_core.agent import Agent
from metods_core.interfaces import ComponentConfig, State, map_state
from metods_core.rollout import LifetimeRecord, Replay, replay_steps

StepLoss = Callable[[Replay, int, int], torch.Tensor]
"""``step_loss(replay, start, stop)``: the loss of steps ``[start, stop)`` from their outputs
``(stop - start, batch)``; the total loss is the sum over the spans."""


class BPTTConfig(ComponentConfig):
    """How gradients are taken through a lifetime (a ``bptt`` field of a meta-optimizer)."""

    mode: Literal["full", "checkpointed", "truncated"] = "full"
    """``full``: one graph over the whole lifetime. ``checkpointed``: the same gradients with
    memory bounded by one chunk's graph plus the plastic state at each chunk boundary, for one
    more forward pass. ``truncated``: no gradient flows between chunks (the state is detached
    every ``chunk`` steps)."""
    chunk: int = Field(50, gt=0)
    """Steps per chunk (``checkpointed`` and ``truncated``). For checkpointing, about the
    square root of the lifetime length balances boundary states against the chunk's graph."""


def backward_through_lifetimes(
    agent: Agent,
    record: LifetimeRecord,
    step_loss: StepLoss,
    backward: Callable[[torch.Tensor], None],
    config: BPTTConfig,
) -> Replay:
    """Accumulate the gradients of the summed ``step_loss`` over replayed ``record`` lifetimes.

    The lifetimes are replayed from ``agent.init_state(batch)`` with the recorded inputs.
    ``backward`` (the meta-optimizer's, i.e. Lightning's ``manual_backward``) is called once
    per chunk (once in ``full`` mode); gradients accumulate in the parameters' ``.grad``.

    Args:
        agent: the agent whose meta-parameters receive the gradients.
        record: the recorded lifetimes, each field ``(steps, batch, ...)``.
        step_loss: ``step_loss(replay, start, stop)`` -> 0-dim loss of steps ``[start, stop)``.
        backward: called on each 0-dim loss to backpropagate it.
        config: the mode and chunk length.

    Returns:
        The detached replay outputs: log-probabilities, values, entropies ``(steps, batch)``.
    """
    steps, batch = record.previous_rewards.shape
    if config.mode == "full" or steps <= config.chunk:  # one span: all modes agree
        replay, _ = replay_steps(agent, record, agent.init_state(batch), 0, steps)
        backward(step_loss(replay, 0, steps))
        return _detached([replay])
    spans = [(start, min(start + config.chunk, steps)) for start in range(0, steps, config.chunk)]
    if config.mode == "truncated":
        return _truncated(agent, record, step_loss, backward, spans)
    return _checkpointed(agent, record, step_loss, backward, spans)


def _truncated(
    agent: Agent,
    record: LifetimeRecord,
    step_loss: StepLoss,
    backward: Callable[[torch.Tensor], None],
    spans: list[tuple[int, int]],
) -> Replay:
    """Backpropagate each span as soon as it is replayed; detach the state between spans."""
    state = agent.init_state(record.previous_rewards.shape[1])
    outputs = []
    for start, stop in spans:
        replay, state = replay_steps(agent, record, state, start, stop)
        loss = step_loss(replay, start, stop)
        backward(loss if start == 0 else loss + _touch_initial_state(agent))
        outputs.append(_detached([replay]))  # keeping the graph would keep its memory
        state = map_state(torch.Tensor.detach, state)
    return _detached(outputs)


def _checkpointed(
    agent: Agent,
    record: LifetimeRecord,
    step_loss: StepLoss,
    backward: Callable[[torch.Tensor], None],
    spans: list[tuple[int, int]],
) -> Replay:
    """Keep the state at span boundaries, then backpropagate the spans in reverse order."""
    batch = record.previous_rewards.shape[1]
    boundaries: list[State | None] = [None]  # span 0 restarts from agent.init_state, with grad
    with torch.no_grad():
        state = agent.init_state(batch)
        for start, stop in spans[:-1]:
            _, state = replay_steps(agent, record, state, start, stop)
            boundaries.append(state)
    outputs: list[Replay] = []
    carried: list[torch.Tensor | None] | None = None  # d(later spans' loss) / d(span's end)
    for index in reversed(range(len(spans))):
        saved = boundaries[index]
        boundaries[index] = None  # free each boundary state once it is used
        start_state = agent.init_state(batch) if saved is None else map_state(_leaf, saved)
        start, stop = spans[index]
        replay, end_state = replay_steps(agent, record, start_state, start, stop)
        loss = step_loss(replay, start, stop)
        if saved is not None:
            loss = loss + _touch_initial_state(agent)
        for gradient, value in zip(carried or [], _leaves(end_state), strict=carried is not None):
            if gradient is not None and value.requires_grad:
                # Its gradient w.r.t. the state is the carried one: the chain rule across spans.
                loss = loss + (gradient * value).sum()
        backward(loss)
        outputs.append(_detached([replay]))  # keeping the graph would keep its memory
        if saved is not None:
            carried = [leaf.grad for leaf in _leaves(start_state)]
    outputs.reverse()
    return _detached(outputs)


def _touch_initial_state(agent: Agent) -> torch.Tensor:
    """Return 0 times the initial state's learned parts (e.g. MetODS's W_0), a 0-dim tensor.

    Only the first chunk reaches the parameters of ``agent.init_state``; DDP without
    ``find_unused_parameters`` requires every backward to reach every parameter, so later
    chunks add this exact zero.
    """
    zero = torch.zeros(())
    for leaf in _leaves(agent.init_state(1)):
        if leaf.requires_grad:
            zero = zero.to(leaf) + 0.0 * leaf.sum()
    return zero


def _leaf(tensor: torch.Tensor) -> torch.Tensor:
    """Return a detached copy of a saved state tensor that collects its gradient."""
    leaf = tensor.detach()
    return leaf.requires_grad_() if leaf.is_floating_point() else leaf


def _leaves(state: Any) -> list[torch.Tensor]:
    """Return the tensors of a plastic state in ``map_state``'s order."""
    found: list[torch.Tensor] = []

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        found.append(tensor)
        return tensor

    map_state(keep, state)
    return found


def _detached(replays: list[Replay]) -> Replay:
    """Concatenate replays of consecutive spans in time and detach them."""
    return Replay(
        torch.cat([replay.log_probs for replay in replays]).detach(),
        torch.cat([replay.values for replay in replays]).detach(),
        torch.cat([replay.entropies for replay in replays]).detach(),
    )
