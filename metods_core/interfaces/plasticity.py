"""The dynamic layer: a rule that reads from and writes to its own state at every step."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn

from metods_core.interfaces.config import ComponentConfig

State = Any
"""A tensor, or a tuple / NamedTuple / dict of tensors, every leaf batched over tasks in dim 0."""


class PlasticityRule(nn.Module, abc.ABC):
    """A layer whose state (synapses, traces, hidden activity) changes within a lifetime.

    The state is explicit data: it is created by ``init_state``, passed to ``step`` and returned
    updated, never stored on the module. Gradients flow through it (backprop through time).
    Subclasses set ``Config`` and ``output_size``; they are built as ``Rule(config, input_size)``.
    """

    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    output_size: int

    @abc.abstractmethod
    def init_state(self, batch_size: int) -> State:
        """Return the state at the start of a lifetime for ``batch_size`` tasks."""

    @abc.abstractmethod
    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Advance one environment step.

        Args:
            x: input of shape ``(batch, input_size)``.
            state: the state returned by the previous call or by ``init_state``.

        Returns:
            The output of shape ``(batch, output_size)`` and the new state.
        """

    def learning_rate_scales(self) -> dict[str, float]:
        """Return learning-rate multipliers by parameter name (as in ``named_parameters``).

        Parameters not named keep the optimizer's rate. Meta-optimizers honour these through
        ``Agent.parameter_groups``.
        """
        return {}

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Return scalar summaries of the rule's meta-parameters, by name.

        0-dim tensors on the parameters' device, detached. ``Agent.rule_diagnostics`` names
        them ``rule/<name>`` and training logs them after every outer step, so a run shows
        where its rule is heading (a read gain running away, a memory shortening) without
        opening checkpoints. Default ``{}``.
        """
        return {}

    def held_from(self) -> int | None:
        """Return K if the rule holds its state from step K of every lifetime on (its ``step``
        then reads the state but no longer changes what later outputs depend on), else None.

        A rule that returns K must implement ``step_held``: replays then compute the steps
        from K on at once (``Agent.evaluate_held``) instead of one after the other. Default
        None: the state may change at every step.
        """
        return None

    def step_held(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Advance ``steps`` environment steps at once, all taken from K = ``held_from()`` on.

        Args:
            x: inputs of the consecutive steps, ``(steps, batch, input_size)``.
            state: the state after at least K steps of the lifetime.

        Returns:
            The outputs ``(steps, batch, output_size)``, each what ``step`` would return for
            its input, and the state after the last step: what ``steps`` calls of ``step``
            would give, up to the order of floating-point sums.
        """
        raise NotImplementedError(
            f"{type(self).__name__}.held_from() returned {self.held_from()}, so the rule must "
            "implement step_held (or return None from held_from)"
        )

    def reset(self, state: State, mask: torch.Tensor) -> State:
        """Re-initialise the lifetimes selected by the boolean ``mask`` of shape ``(batch,)``."""
        from metods_core.interfaces.state import where_state

        batch_size = int(mask.shape[0])
        return where_state(mask, self.init_state(batch_size), state)
