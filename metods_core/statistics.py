"""Means and 95 % confidence intervals over tasks or seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Z_95 = 1.959963984540054
"""Two-sided 95 % quantile of the standard normal distribution."""


def mean_and_ci95(values: torch.Tensor | Sequence[float]) -> tuple[float, float, int]:
    """Return the mean, the half-width of its normal-approximation 95 % CI, and the count.

    NaN entries (undefined for that task) are left out; with fewer than two values the
    half-width is NaN.
    """
    data = torch.as_tensor(values, dtype=torch.float64).flatten()
    data = data[~torch.isnan(data)]
    count = int(data.numel())
    if count == 0:
        return math.nan, math.nan, 0
    mean = float(data.mean())
    if count < 2:
        return mean, math.nan, count
    half_width = Z_95 * float(data.std(unbiased=True)) / math.sqrt(count)
    return mean, half_width, count
