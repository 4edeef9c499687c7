"""What the Hebbian and backpropamine layers share: W + alpha * Hebb on a recurrent layer.

Both rules (Miconi et al. 2018, 2019) read ``h_t = tanh(U x_t + b + (W + alpha * Hebb) h_{t-1})``
and then update the trace Hebb from the co-activity ``h_t h_{t-1}^T``; they differ only in that
update. The rules compose these helpers rather than subclass one another.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch
from pydantic import Field
from torch import nn

from metods_core import ComponentConfig


class PlasticLayerConfig(ComponentConfig):
    """Parameters common to the plastic recurrent layers."""

    hidden_size: int | None = Field(None, gt=0)
    """Recurrent units, the output width (None: the input size)."""
    alpha: Literal["elementwise", "scalar"] = "elementwise"
    """Plasticity coefficients: one per connection, or one for the layer."""
    alpha_init: float = 0.1
    """Initial value of every plasticity coefficient alpha."""
    clip: float = Field(1.0, gt=0)
    """Bound of the trace: Hebb is clipped to [-clip, clip] after every update."""


class PlasticLayer(Protocol):
    """The parameters ``init_plastic_layer`` gives a rule and ``plastic_read`` reads: U and b
    (``input``: weight ``(N, input_size)``, bias ``(N,)``), W ``(N, N)`` (``weights``) and the
    plasticity coefficients alpha, ``(N, N)`` or ``(1,)``."""

    output_size: int
    input: nn.Linear
    weights: nn.Parameter
    alpha: nn.Parameter


def init_plastic_layer(layer: PlasticLayer, config: PlasticLayerConfig, input_size: int) -> int:
    """Give ``layer`` its input weight U, fixed weights W and coefficients alpha; return N."""
    n = config.hidden_size or input_size
    layer.output_size = n
    layer.input = nn.Linear(input_size, n)
    layer.weights = nn.Parameter(torch.empty(n, n).uniform_(-1 / n**0.5, 1 / n**0.5))
    alpha_shape = (n, n) if config.alpha == "elementwise" else (1,)
    layer.alpha = nn.Parameter(torch.full(alpha_shape, config.alpha_init))
    return n


def rate_logit(rate: float) -> nn.Parameter:
    """Return a learnable logit whose sigmoid is ``rate`` (keeps a learned rate in (0, 1))."""
    return nn.Parameter(torch.tensor(math.log(rate / (1 - rate))))


def plastic_read(
    layer: PlasticLayer, x: torch.Tensor, pre: torch.Tensor, hebb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return h_t ``(batch, N)`` and the co-activity h_t h_{t-1}^T ``(batch, N, N)``.

    Args:
        x: input ``(batch, input_size)``; pre: h_{t-1} ``(batch, N)``; hebb: ``(batch, N, N)``
            stored ``(n_post, n_pre)``.
    """
    # (W + alpha * Hebb) h_{t-1}: the fixed part as one matrix product for the batch, the
    # plastic part as a broadcast multiply-and-sum (this torch build's batched
    # matrix x vector bmm is a slow path on the CPU).
    plastic = layer.alpha * hebb  # (batch, n_post, n_pre)
    recurrent = pre @ layer.weights.t() + (plastic * pre.unsqueeze(-2)).sum(-1)
    post = torch.tanh(layer.input(x) + recurrent)
    coactivity = post.unsqueeze(-1) * pre.unsqueeze(-2)  # post_j pre_i at [j, i]
    return post, coactivity
