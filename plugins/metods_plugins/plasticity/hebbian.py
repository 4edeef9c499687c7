"""Differentiable plasticity: Hebbian traces on recurrent weights (Miconi, Clune & Stanley 2018).

"Differentiable plasticity: training plastic neural networks with backpropagation" (ICML 2018).
A recurrent layer whose connection i -> j has a fixed part w_ij and a plastic part
alpha_ij * Hebb_ij, both meta-learned; only the trace Hebb changes within a lifetime::

    h_t   = tanh(U x_t + b + (W + alpha * Hebb_{t-1}) h_{t-1})          # * element-wise
    decay: Hebb_t = (1 - eta) Hebb_{t-1} + eta h_t h_{t-1}^T
    oja:   Hebb_t = Hebb_{t-1} + eta h_t * (h_{t-1}^T - h_t * Hebb_{t-1})  # row j: post_j
    Hebb_t <- clip(Hebb_t, -clip, clip)

Matrices are stored ``(n_post, n_pre)``, so the paper's Hebb_ij (pre i, post j) is our
``hebb[j, i]``. The output is h_t; the state is (h_t, Hebb_t), both zero at the start of a
lifetime. The input x_t enters through the input weight U (the paper's network is driven by
its inputs the same way).

Our choices where the paper leaves room: eta = sigmoid(a learned logit), so the decaying trace
is a convex combination and stays in [-1, 1] without clipping; alpha starts at a constant
(``alpha_init``) rather than random; the clip bounds Oja's rule, whose trace can grow when
post-synaptic activity is small.
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


class HebbianState(NamedTuple):
    """State of the Hebbian layer."""

    hidden: torch.Tensor
    """h_t, the recurrent activity and output: ``(batch, hidden_size)``."""
    hebb: torch.Tensor
    """Hebb_t, the plastic trace: ``(batch, n_post, n_pre)`` with n_post = n_pre = hidden."""


class HebbianRule(PlasticityRule):
    """Recurrent layer with plastic weights W + alpha * Hebb (Miconi et al. 2018)."""

    class Config(PlasticLayerConfig):
        """Parameters of the differentiable-plasticity layer."""

        rule: Literal["decay", "oja"] = "decay"
        """Trace update: decaying Hebb (1-eta) Hebb + eta post pre^T, or Oja's rule."""
        eta_init: float = Field(0.1, gt=0, lt=1)
        """Initial trace rate eta (learned, kept in (0, 1) by a sigmoid)."""

    # Set by init_plastic_layer; their shapes are in PlasticLayer's docstring.
    input: nn.Linear
    weights: nn.Parameter
    alpha: nn.Parameter

    def __init__(self, config: Config, input_size: int) -> None:
        super().__init__()
        self.config = config
        init_plastic_layer(self, config, input_size)
        self.eta_logit = rate_logit(config.eta_init)

    def init_state(self, batch_size: int) -> HebbianState:
        """Return h_0 = 0 ``(batch, N)`` and Hebb_0 = 0 ``(batch, N, N)``."""
        n = self.output_size
        return HebbianState(
            self.weights.new_zeros(batch_size, n), self.weights.new_zeros(batch_size, n, n)
        )

    def step(self, x: torch.Tensor, state: HebbianState) -> tuple[torch.Tensor, HebbianState]:
        """Update h and Hebb from ``x`` ``(batch, input_size)``; output h_t ``(batch, N)``."""
        # ---- Miconi et al. 2018: plastic recurrent read, then the Hebbian trace update ----
        pre, hebb = state
        post, coactivity = plastic_read(self, x, pre, hebb)
        eta = torch.sigmoid(self.eta_logit)
        if self.config.rule == "decay":
            hebb = (1 - eta) * hebb + eta * coactivity
        else:
            hebb = hebb + eta * (coactivity - post.unsqueeze(-1).square() * hebb)
        hebb = hebb.clamp(-self.config.clip, self.config.clip)
        return post, HebbianState(post, hebb)
