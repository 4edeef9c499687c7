"""Helpers over plastic state containers (tensors, tuples, NamedTuples, dicts of tensors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def map_state(fn: Callable[..., torch.Tensor], *states: Any) -> Any:
    """Apply ``fn`` leaf-wise to one or more states of the same structure."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return fn(*states)
    if isinstance(first, dict):
        return {key: map_state(fn, *(s[key] for s in states)) for key in first}
    if isinstance(first, tuple):
        mapped = [map_state(fn, *parts) for parts in zip(*states, strict=True)]
        return type(first)(*mapped) if hasattr(first, "_fields") else tuple(mapped)
    if first is None:
        return None
    raise TypeError(f"plastic state leaves must be tensors, got {type(first).__name__}")


def where_state(mask: torch.Tensor, fresh: Any, old: Any) -> Any:
    """Take ``fresh`` where the boolean ``mask`` (shape ``(batch,)``) is set, ``old`` elsewhere."""

    def select(new: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        shaped = mask.reshape(mask.shape + (1,) * (previous.dim() - 1))
        return torch.where(shaped, new.to(previous.dtype), previous)

    return map_state(select, fresh, old)
