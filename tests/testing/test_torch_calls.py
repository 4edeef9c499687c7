"""CountTorchCalls counts torch calls, so "same count for 2 and 64 tasks" means something."""

from __future__ import annotations

import torch

from metods_core.testing import CountTorchCalls


def test_counts_each_torch_call_and_only_inside_the_context() -> None:
    """Three torch operations count three; calls after the context are not counted."""
    x = torch.ones(4)
    with CountTorchCalls() as counter:
        y = torch.add(x, 1)
        y = y * 2
        y.sum()
    assert counter.calls == 3
    torch.add(x, 1)
    assert counter.calls == 3


def test_a_python_loop_over_tasks_costs_more_calls() -> None:
    """A loop over the batch makes the count grow with the batch; a batched call does not."""
    counts = {}
    for batch in (2, 8):
        x = torch.ones(batch)
        with CountTorchCalls() as looped:
            for index in range(batch):
                x[index] + 1
        with CountTorchCalls() as batched:
            x + 1
        counts[batch] = (looped.calls, batched.calls)
    assert counts[2][0] < counts[8][0]
    assert counts[2][1] == counts[8][1] == 1
