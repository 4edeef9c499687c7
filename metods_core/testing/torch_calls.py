"""Count torch calls, to check that a batched env's step has no Python loop over its tasks."""

from __future__ import annotations

from typing import Any

from torch.overrides import TorchFunctionMode

__all__ = ["CountTorchCalls"]


class CountTorchCalls(TorchFunctionMode):
    """Count the torch functions and tensor methods called inside the context.

    A vectorised ``BatchedEnv.step`` costs the same number of calls for 2 tasks as for 64::

        with CountTorchCalls() as counter:
            env.step(actions)
        calls = counter.calls
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.calls += 1
        return func(*args, **(kwargs or {}))
