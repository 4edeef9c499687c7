"""Recurrent memories with fixed weights: the RL^2 baselines (Duan et al. 2016; Wang et al. 2016).

In RL^2 ("Fast reinforcement learning via slow reinforcement learning", Duan et al. 2016) and
"Learning to reinforcement learn" (Wang et al. 2016) the within-task learner is the hidden
activity of a recurrent network whose weights are meta-learned and then fixed; no synapse
changes within a lifetime. One environment step is one cell update, with x_t the embedding of
(observation, previous action, previous reward)::

    Elman RNN:  h_t = tanh(W_x x_t + b_x + W_h h_{t-1} + b_h)
    GRU:        r, z = sigmoid(W_{r,z} [x_t, h_{t-1}]);  n = tanh(W_n x_t + r * (U_n h_{t-1}))
                h_t = (1 - z) * n + z * h_{t-1}
    LSTM:       i, f, o = sigmoid(W_{i,f,o} [x_t, h_{t-1}]);  g = tanh(W_g [x_t, h_{t-1}])
                c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)

(biases omitted) as computed by ``torch.nn.RNNCell``, ``GRUCell`` and ``LSTMCell``. The output
is h_t; the state is h_t ``(batch, hidden)``, plus the cell c_t for the LSTM. Both start at zero.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from pydantic import Field
from torch import nn

from metods_core import ComponentConfig, PlasticityRule


class _RecurrentConfig(ComponentConfig):
    """Parameters shared by the recurrent memories."""

    hidden_size: int | None = Field(None, gt=0)
    """Width of the hidden state and of the output (None: the input size)."""


class LSTMState(NamedTuple):
    """State of the LSTM memory."""

    hidden: torch.Tensor
    """h_t, the output: ``(batch, hidden_size)``."""
    cell: torch.Tensor
    """c_t, the cell: ``(batch, hidden_size)``."""


def _zeros(module: nn.Module, batch_size: int, size: int) -> torch.Tensor:
    weight = next(module.parameters())
    return weight.new_zeros(batch_size, size)


class RNNRule(PlasticityRule):
    """Elman recurrent memory (RL^2 with a vanilla RNN): the state is the hidden activity."""

    class Config(_RecurrentConfig):
        """Parameters of the Elman RNN memory."""

        nonlinearity: Literal["tanh", "relu"] = "tanh"
        """Non-linearity of the cell update."""

    def __init__(self, config: Config, input_size: int) -> None:
        super().__init__()
        self.config = config
        self.output_size = config.hidden_size or input_size
        self.cell = nn.RNNCell(input_size, self.output_size, nonlinearity=config.nonlinearity)

    def init_state(self, batch_size: int) -> torch.Tensor:
        """Return h_0 = 0: ``(batch, hidden_size)``."""
        return _zeros(self.cell, batch_size, self.output_size)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Update h from ``x`` ``(batch, input_size)``; return h_t twice (output and state)."""
        hidden = self.cell(x, state)
        return hidden, hidden


class GRURule(PlasticityRule):
    """Gated recurrent unit memory (RL^2 as in Duan et al. 2016): the state is h_t."""

    class Config(_RecurrentConfig):
        """Parameters of the GRU memory."""

    def __init__(self, config: Config, input_size: int) -> None:
        super().__init__()
        self.config = config
        self.output_size = config.hidden_size or input_size
        self.cell = nn.GRUCell(input_size, self.output_size)

    def init_state(self, batch_size: int) -> torch.Tensor:
        """Return h_0 = 0: ``(batch, hidden_size)``."""
        return _zeros(self.cell, batch_size, self.output_size)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Update h from ``x`` ``(batch, input_size)``; return h_t twice (output and state)."""
        hidden = self.cell(x, state)
        return hidden, hidden


class LSTMRule(PlasticityRule):
    """Long short-term memory (Wang et al. 2016's meta-RL agent): the state is (h_t, c_t)."""

    class Config(_RecurrentConfig):
        """Parameters of the LSTM memory."""

    def __init__(self, config: Config, input_size: int) -> None:
        super().__init__()
        self.config = config
        self.output_size = config.hidden_size or input_size
        self.cell = nn.LSTMCell(input_size, self.output_size)

    def init_state(self, batch_size: int) -> LSTMState:
        """Return (h_0, c_0) = (0, 0), each ``(batch, hidden_size)``."""
        return LSTMState(
            _zeros(self.cell, batch_size, self.output_size),
            _zeros(self.cell, batch_size, self.output_size),
        )

    def step(self, x: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """Update (h, c) from ``x`` ``(batch, input_size)``; return h_t and the new state."""
        hidden, cell = self.cell(x, (state.hidden, state.cell))
        return hidden, LSTMState(hidden, cell)
