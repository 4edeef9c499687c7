"""``run_if``: skip a test, with the reason, unless the machine has what it needs.

In the manner of Lightning's ``RunIf`` (re-implemented here, not copied): each condition that
fails adds a reason, and a test that needs a GPU also gets the ``gpu`` marker, so that
``pytest -m gpu`` selects exactly the tests a GPU machine should run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import torch

Test = TypeVar("Test", bound=Callable[..., Any])


def run_if(*, min_cuda_gpus: int = 0, bf16_cuda: bool = False) -> Callable[[Test], Test]:
    """Return a decorator that marks a test ``gpu`` and skips it when the conditions fail.

    Args:
        min_cuda_gpus: CUDA devices the test needs.
        bf16_cuda: the test needs a CUDA device that computes in bfloat16.
    """
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    reasons = []
    if found < min_cuda_gpus:
        reasons.append(
            f"needs {min_cuda_gpus} CUDA GPU(s), found {found} "
            f"(torch.cuda.is_available() is {torch.cuda.is_available()}, torch {torch.__version__})"
        )
    if bf16_cuda and not (found and torch.cuda.is_bf16_supported()):
        reasons.append("needs a CUDA GPU with bfloat16 support")

    def decorate(test: Test) -> Test:
        test = pytest.mark.skipif(bool(reasons), reason="; ".join(reasons))(test)
        if min_cuda_gpus or bf16_cuda:
            test = pytest.mark.gpu(test)
        return test

    return decorate
