"""Delta-rule fast weight programmer (Schlag, Irie & Schmidhuber, ICML 2021).

"Linear Transformers Are Secretly Fast Weight Programmers". A slow net maps each input x_t to a
key, a value, a query and a write strength, and programs a fast weight matrix W with the delta
rule: it first reads what W stores under the key, then replaces it by the new value::

    k_t, v_t, q_t, b_t = P g(x_t)                   # slow projections; g = identity or tanh MLP
    beta_t = sigmoid(b_t)                            # write strength in (0, 1)
    k_t, q_t <- phi(k_t), phi(q_t)                   # normalised key/query features
    W_t = W_{t-1} + beta_t (v_t - W_{t-1} k_t) k_t^T
    y_t = sigma(W_t q_t)                             # sigma = identity (the paper) or tanh

``phi`` (``key_map``): ``dpfp`` is the paper's deterministic parameter-free projection
(r = relu, [k, -k] of size 2d, phi = concat_{i=1..nu} r([k,-k]) * roll(r([k,-k]), i), size
2 d nu) followed by the paper's sum normalisation phi / sum(phi); ``softmax`` is softmax(k)
(positive, sums to 1); ``l2`` is k / ||k||_2. Only with unit-norm keys (``l2``) does a write with
beta = 1 store v exactly (W_t k_t = v_t); with sum-normalised keys (||k||_2 <= 1) a write moves
the stored value only a fraction beta ||k||^2 of the way to v. The state is W ``(batch, value_size,
feature_size)``, zero at the start of a lifetime; the output is ``(batch, value_size)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from metods_core import ComponentConfig, PlasticityRule

_EPS = 1e-6
"""Keeps the normalisations finite when every feature is zero."""


def delta_rule(
    weights: torch.Tensor, key: torch.Tensor, value: torch.Tensor, strength: torch.Tensor
) -> torch.Tensor:
    """Write ``value`` under ``key``: ``W + beta (v - W k) k^T``.

    Args:
        weights: W ``(batch, value_size, feature_size)``.
        key: k ``(batch, feature_size)``.
        value: v ``(batch, value_size)``.
        strength: beta ``(batch, 1)``.

    Returns:
        The new W, same shape as ``weights``.
    """
    stored = (weights * key.unsqueeze(-2)).sum(-1)  # W k; bmm by a vector is slow on CPU here
    change = strength * (value - stored)
    return weights + change.unsqueeze(-1) * key.unsqueeze(-2)


class FastWeightsRule(PlasticityRule):
    """A slow net programs fast weights W with the delta rule; the output reads W with a query."""

    class Config(ComponentConfig):
        """Parameters of the delta-rule fast weight programmer."""

        key_size: int = Field(8, gt=0)
        """d: width of the key and query projections (before the feature map)."""
        value_size: int | None = Field(None, gt=0)
        """Width of the values and of the output (None: the input size)."""
        key_map: Literal["dpfp", "softmax", "l2"] = "dpfp"
        """phi on keys and queries: sum-normalised DPFP (the paper), softmax, or L2 norm."""
        dpfp_nu: int = Field(1, ge=1)
        """nu of DPFP: the feature size is 2 * key_size * nu (dpfp only)."""
        projection_hidden: int = Field(0, ge=0)
        """Width of a tanh layer g before the projections (0: linear projections of x)."""
        output_activation: Literal["identity", "tanh"] = "identity"
        """sigma on the read-out W q."""

    def __init__(self, config: Config, input_size: int) -> None:
        super().__init__()
        self.config = config
        self.key_size = config.key_size
        self.output_size = config.value_size or input_size
        self.feature_size = config.key_size * (
            2 * config.dpfp_nu if config.key_map == "dpfp" else 1
        )
        self.hidden: nn.Module = nn.Identity()
        width = input_size
        if config.projection_hidden:
            self.hidden = nn.Sequential(nn.Linear(input_size, config.projection_hidden), nn.Tanh())
            width = config.projection_hidden
        # one fused map to [key, value, query, write strength]
        self.projection = nn.Linear(width, 2 * config.key_size + self.output_size + 1)

    def features(self, projected: torch.Tensor) -> torch.Tensor:
        """Apply phi to keys or queries ``(batch, key_size)`` -> ``(batch, feature_size)``."""
        if self.config.key_map == "l2":
            return projected / projected.norm(dim=-1, keepdim=True).clamp_min(_EPS)
        if self.config.key_map == "softmax":
            return torch.softmax(projected, dim=-1)
        rectified = torch.relu(torch.cat([projected, -projected], dim=-1))
        products = [
            rectified * torch.roll(rectified, shifts=i, dims=-1)
            for i in range(1, self.config.dpfp_nu + 1)
        ]
        features = torch.cat(products, dim=-1)
        return features / features.sum(dim=-1, keepdim=True).clamp_min(_EPS)

    def init_state(self, batch_size: int) -> torch.Tensor:
        """Return W_0 = 0: ``(batch, value_size, feature_size)``."""
        weight = self.projection.weight
        return weight.new_zeros(batch_size, self.output_size, self.feature_size)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write to W ``(batch, value_size, feature_size)`` from ``x`` ``(batch, input_size)``,
        then read it with the query; return ``(batch, value_size)`` and the new W."""
        # ---- Schlag et al. 2021: delta-rule write, then query read ----
        d = self.key_size
        projected = self.projection(self.hidden(x))
        key = self.features(projected[:, :d])
        query = self.features(projected[:, d : 2 * d])
        value = projected[:, 2 * d : -1]
        strength = torch.sigmoid(projected[:, -1:])
        weights = delta_rule(state, key, value, strength)
        y = (weights * query.unsqueeze(-2)).sum(-1)  # W q, as a broadcast multiply-and-sum
        if self.config.output_activation == "tanh":
            y = torch.tanh(y)
        return y, weights
