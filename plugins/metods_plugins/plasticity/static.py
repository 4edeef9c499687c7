"""Static layer: the no-plasticity floor that every plastic rule is compared against.

A fixed, meta-learned feed-forward layer with no memory at all::

    y_t = tanh(W x_t + b)

``W`` and ``b`` change only in the outer loop, so within a lifetime the output depends on the
current input alone: the agent cannot remember which object was rewarded. The state is an empty
tensor ``(batch, 0)`` so that the layer fits the ``PlasticityRule`` interface unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from metods_core import ComponentConfig, PlasticityRule

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "identity": None}


class StaticRule(PlasticityRule):
    """A fixed learned layer y = sigma(W x + b) with an empty state: no memory (the floor)."""

    class Config(ComponentConfig):
        """Parameters of the static layer."""

        hidden_size: int | None = Field(None, gt=0)
        """Output width (None: the input size); sets the parameter count."""
        activation: Literal["tanh", "relu", "identity"] = "tanh"
        """Non-linearity sigma of the layer."""

    def __init__(self, config: Config, input_size: int) -> None:
        super().__init__()
        self.config = config
        self.output_size = config.hidden_size or input_size
        self.layer = nn.Linear(input_size, self.output_size)
        self._activation = _ACTIVATIONS[config.activation]

    def init_state(self, batch_size: int) -> torch.Tensor:
        """Return the empty state ``(batch, 0)``."""
        weight = self.layer.weight
        return weight.new_zeros(batch_size, 0)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``x`` ``(batch, input_size)`` to ``(batch, output_size)``; pass the state through."""
        y = self.layer(x)
        if self._activation is not None:
            y = self._activation(y)
        return y, state
