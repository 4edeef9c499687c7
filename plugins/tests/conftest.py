"""Fixtures of the plugin tests: one CPU thread and a fixed global seed for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread_fixed_seed() -> Iterator[None]:
    """Run each test on one thread (tiny tensors; the machine is shared) from seed 0."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
