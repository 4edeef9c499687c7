"""Backpropamine: neuromodulated Hebbian plasticity (Miconi et al., ICLR 2019).

"Backpropamine: training self-modifying neural networks with differentiable neuromodulated
plasticity". The recurrent layer of differentiable plasticity (``hebbian``), where the network
itself decides when and how much its plastic traces change through a learned neuromodulatory
output M(t)::

    h_t  = tanh(U x_t + b + (W + alpha * Hebb_{t-1}) h_{t-1})      # * element-wise
    M_t  = tanh(w_m . h_t + b_m)                                  # one scalar per task
    simple:       Hebb_t = clip(Hebb_{t-1} + M_t h_t h_{t-1}^T)
    retroactive:  Hebb_t = clip(Hebb_{t-1} + M_t E_{t-1})
                  E_t    = (1 - eta) E_{t-1} + eta h_t h_{t-1}^T

with clip(.) to [-clip, clip]. Matrices are stored ``(n_post, n_pre)`` (the paper's Hebb_ij,
pre i -> post j, is our ``hebb[j, i]``). In the retroactive variant the eligibility trace E
remembers recent co-activity, and a later modulation turns it into a weight change: as in the
paper's indexing, M_t acts on E_{t-1}, the trace accumulated before step t. The output is h_t;
the state is (h_t, Hebb_t, E_t), all zero at the start of a lifetime (E is an empty
``(batch, 0)`` tensor in the simple variant). Our choices: eta = sigmoid(a learned logit), and
alpha starts at a constant ``alpha_init``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from pydantic import Field
from torch import nn

from metods_core import PlasticityRule
from metods_plugins.plasticity._plastic_layer import (
    PlasticLayerConfig,
    init_plastic_layer,
    plastic_read,
    rate_logit,
)


class NeuromodulatedState(NamedTuple):
    """State of the neuromodulated layer."""

    hidden: torch.Tensor
    """h_t, the recurrent activity and output: ``(batch, hidden_size)``."""
    hebb: torch.Tensor
    """Hebb_t, the plastic trace: ``(batch, n_post, n_pre)``."""
    eligibility: torch.Tensor
    """E_t, the eligibility trace ``(batch, n_post, n_pre)``; ``(batch, 0)`` if unused."""


class NeuromodulatedRule(PlasticityRule):
    """Recurrent layer whose Hebbian updates are gated by a learned neuromodulator M(t)."""

    class Config(PlasticLayerConfig):
        """Parameters of the backpropamine layer."""

        variant: Literal["simple", "retroactive"] = "simple"
        """M(t) gates the current co-activity (simple) or an eligibility trace (retroactive)."""
        eta_init: float = Field(0.1, gt=0, lt=1)
        """Initial eligibility-trace rate eta (retroactive only; learned, in (0, 1))."""

    # Set by init_plastic_layer; their shapes are in PlasticLayer's docstring.
    input: nn.Linear
    weights: nn.Parameter
    alpha: nn.Parameter

    def __init__(self, config: Config, input_size: int) -> None:
        super().__init__()
        self.config = config
        n = init_plastic_layer(self, config, input_size)
        self.modulator = nn.Linear(n, 1)
        self.eta_logit: nn.Parameter | None = None
        if config.variant == "retroactive":
            self.eta_logit = rate_logit(config.eta_init)

    def init_state(self, batch_size: int) -> NeuromodulatedState:
        """Return h_0 = 0 ``(batch, N)``, Hebb_0 = 0 and E_0 = 0 ``(batch, N, N)``."""
        n = self.output_size
        zeros = self.weights.new_zeros
        eligibility = (
            zeros(batch_size, n, n) if self.eta_logit is not None else zeros(batch_size, 0)
        )
        return NeuromodulatedState(zeros(batch_size, n), zeros(batch_size, n, n), eligibility)

    def modulation(self, hidden: torch.Tensor) -> torch.Tensor:
        """Return M = tanh(w_m . h + b_m) ``(batch, 1, 1)`` for activity ``(batch, N)``."""
        return torch.tanh(self.modulator(hidden)).unsqueeze(-1)

    def step(
        self, x: torch.Tensor, state: NeuromodulatedState
    ) -> tuple[torch.Tensor, NeuromodulatedState]:
        """Update h, Hebb (and E) from ``x`` ``(batch, input_size)``; output h_t ``(batch, N)``."""
        # ---- Backpropamine: plastic recurrent read, then the neuromodulated update ----
        pre, hebb, eligibility = state
        post, coactivity = plastic_read(self, x, pre, hebb)
        modulation = self.modulation(post)
        if self.eta_logit is None:
            hebb = hebb + modulation * coactivity
        else:
            hebb = hebb + modulation * eligibility
            eta = torch.sigmoid(self.eta_logit)
            eligibility = (1 - eta) * eligibility + eta * coactivity
        hebb = hebb.clamp(-self.config.clip, self.config.clip)
        return post, NeuromodulatedState(post, hebb, eligibility)
