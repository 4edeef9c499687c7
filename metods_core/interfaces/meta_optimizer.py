"""The outer loop: collect lifetimes on a batch of tasks and update the meta-parameters."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from metods_core.interfaces.config import ComponentConfig
from metods_core.interfaces.tasks import BatchedEnv

if TYPE_CHECKING:
    from metods_core.agent import Agent


@dataclass
class OuterStep:
    """What the training loop hands to the meta-optimizer for one outer step.

    Attributes:
        optimizer: the optimizer built by ``configure_optimizer``.
        backward: call it instead of ``loss.backward()`` (Lightning's ``manual_backward``:
            precision plugins and DDP gradient synchronisation go through it).
        generator: the random stream of this step, for action sampling.
    """

    optimizer: torch.optim.Optimizer
    backward: Callable[[torch.Tensor], None]
    generator: torch.Generator


class MetaOptimizer(abc.ABC):
    """An outer-loop algorithm (A2C, PPO, ES...). Built as ``MetaOptimizer(config)``."""

    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    @abc.abstractmethod
    def configure_optimizer(self, agent: Agent) -> torch.optim.Optimizer:
        """Return the optimizer over ``agent``'s meta-parameters."""

    @abc.abstractmethod
    def training_step(
        self, agent: Agent, env: BatchedEnv, step: OuterStep
    ) -> dict[str, torch.Tensor]:
        """Run lifetimes in ``env``, update the agent, and return scalar metrics to log."""
