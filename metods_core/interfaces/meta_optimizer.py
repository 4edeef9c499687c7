"""The outer loop: collect lifetimes on a batch of tasks and update the meta-parameters."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import torch

from metods_core.interfaces.config import ComponentConfig
from metods_core.interfaces.tasks import BatchedEnv, TaskBatch

if TYPE_CHECKING:
    from metods_core.agent import Agent
    from metods_core.rollout import Lifetimes

ReduceOp = Literal["mean", "sum"]


def _identity_all_reduce(tensor: torch.Tensor, op: ReduceOp = "mean") -> torch.Tensor:
    return tensor


@dataclass
class OuterBatch:
    """Everything one outer step of meta-training may use, whatever the algorithm.

    Attributes:
        tasks: the task batch of this step and process (``tasks.size`` tasks).
        build_env: builds the batched env of a task batch afresh; two envs built from the
            same tasks and driven by the same actions give identical lifetimes.
        optimizer: the optimizer built by ``configure_optimizer``.
        backward: call it instead of ``loss.backward()`` (Lightning's ``manual_backward``:
            precision plugins and DDP gradient synchronisation go through it). It may be
            called several times per outer step (epochs, minibatches, BPTT chunks).
        all_reduce: ``all_reduce(tensor, op)`` returns the ``"mean"`` or ``"sum"`` of
            ``tensor`` over every process (the identity on one process). Use it for anything
            computed by hand that every rank must agree on (ES fitness, hand-made gradients).
        generator: the random stream of this step, for action sampling and perturbations.
        step: the outer-step index (0-based), the same on every rank.
        rank: this process's global rank; ``world_size`` processes take part.
        world_size: number of processes.
    """

    tasks: TaskBatch
    build_env: Callable[[TaskBatch], BatchedEnv]
    optimizer: torch.optim.Optimizer
    backward: Callable[[torch.Tensor], None]
    generator: torch.Generator
    step: int = 0
    all_reduce: Callable[..., torch.Tensor] = _identity_all_reduce
    rank: int = 0
    world_size: int = 1
    _envs: list[BatchedEnv] = field(default_factory=list, repr=False)

    def make_env(self, tasks: TaskBatch | None = None) -> BatchedEnv:
        """Build a fresh env of ``tasks`` (default: this step's); closed after the step."""
        env = self.build_env(self.tasks if tasks is None else tasks)
        self._envs.append(env)
        return env

    def run_lifetimes(
        self, agent: Agent, tasks: TaskBatch | None = None, record: bool = False
    ) -> Lifetimes:
        """Run one lifetime per task of ``tasks`` (default: this step's) in a fresh env.

        Actions are sampled with ``generator``. ``record=True`` keeps what a replay needs
        (``Lifetimes.record``; see ``metods_core.rollout.replay_lifetimes``).
        """
        from metods_core.rollout import run_lifetimes

        return run_lifetimes(agent, self.make_env(tasks), self.generator, record=record)

    def close(self) -> None:
        """Close every env built during the step (the training loop calls it)."""
        while self._envs:
            self._envs.pop().close()


class MetaOptimizer(abc.ABC):
    """An outer-loop algorithm (A2C, PPO, ES...). Built as ``MetaOptimizer(config)``.

    How many rollouts, backward passes or optimizer steps it takes inside one outer step is
    its own business: the training loop counts outer steps itself.
    """

    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    uses_gradients: ClassVar[bool] = True
    """Whether ``training_step`` computes gradients through ``OuterBatch.backward``. A
    gradient-free algorithm (ES) sets it to False: it writes its own ``.grad`` estimates or
    updates the parameters directly, and never calls ``backward``."""

    @abc.abstractmethod
    def configure_optimizer(self, agent: Agent) -> torch.optim.Optimizer:
        """Return the optimizer over ``agent``'s meta-parameters."""

    @abc.abstractmethod
    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        """Run lifetimes of ``batch``'s tasks, update the agent, return scalar metrics to log.

        Metrics are detached 0-dim tensors; ``loss`` (if any) is checked to be finite.
        """
