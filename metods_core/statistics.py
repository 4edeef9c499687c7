"""Means and 95 % confidence intervals over tasks or seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Z_95 = 1.959963984540054
"""Two-sided 95 % quantile of the standard normal distribution."""

_T_95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
"""Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom."""


def t_quantile_95(degrees_of_freedom: int) -> float:
    """Return Student's t two-sided 95 % quantile (tabulated to 30, Cornish-Fisher beyond)."""
    if degrees_of_freedom < 1:
        raise ValueError("a confidence interval needs at least one degree of freedom")
    if degrees_of_freedom <= len(_T_95):
        return _T_95[degrees_of_freedom - 1]
    z, nu = Z_95, degrees_of_freedom
    return z + (z**3 + z) / (4 * nu) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2)


def mean_and_ci95(values: torch.Tensor | Sequence[float]) -> tuple[float, float, int]:
    """Return the mean, the half-width of its 95 % confidence interval, and the count.

    The interval is Student's t interval, so that it stays honest for a handful of seeds
    (with 1000 tasks it is the normal one). NaN entries (undefined for that task) are left
    out; with fewer than two values the half-width is NaN.
    """
    data = torch.as_tensor(values, dtype=torch.float64).flatten()
    data = data[~torch.isnan(data)]
    count = int(data.numel())
    if count == 0:
        return math.nan, math.nan, 0
    mean = float(data.mean())
    if count < 2:
        return mean, math.nan, count
    half_width = t_quantile_95(count - 1) * float(data.std(unbiased=True)) / math.sqrt(count)
    return mean, half_width, count
