"""Task distributions and the batched environments they build."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gymnasium as gym
import torch

from metods_core.interfaces.config import ComponentConfig

Split = Literal["train", "validation", "test"]
"""Which tasks: ``train`` (meta-training), ``test`` (held out, the reported meta-test), or
``validation`` (held out from training but drawn like it, to choose a checkpoint without
looking at the test split); only samplers whose ``has_validation_split()`` is true draw it."""


@dataclass
class TaskBatch:
    """Parameters of ``size`` tasks. Subclasses add tensors batched over tasks in dim 0.

    ``seed`` seeds the environment's own randomness, so that a task batch and its lifetimes
    are reproducible from the batch alone (and resume exactly after a restart).

    ``copies`` says how many tiled copies of ``size // copies`` base tasks the batch holds
    (``repeat`` sets it; 1 for a sampled batch). An env built from it draws its own per-env
    random numbers for the base tasks only and tiles them, so every copy of a task lives the
    same lifetime under the same actions (common random numbers, for populations).
    """

    size: int
    split: Split
    seed: int
    copies: int = dataclasses.field(default=1, kw_only=True)

    def repeat(self, times: int) -> TaskBatch:
        """Return the batch tiled ``times`` times: task ``i`` of copy ``k`` is task
        ``k * size + i`` (every tensor field batched in dim 0 is repeated; ``seed`` is kept,
        ``copies`` is multiplied by ``times``).

        Used by algorithms that run several agents on the same tasks (an ES population); the
        env of the result gives every copy of a task the same randomness (see ``copies``).
        """
        tiled = self._map_task_tensors(lambda v: v.repeat(times, *([1] * (v.dim() - 1))))
        return dataclasses.replace(
            self, size=self.size * times, copies=self.copies * times, **tiled
        )

    def select(self, start: int, stop: int, seed: int) -> TaskBatch:
        """Return tasks ``start`` to ``stop - 1`` as their own batch, whose env draws its
        randomness from ``seed`` (every tensor field batched in dim 0 is sliced).

        Used to run a batch drawn in one piece (a whole meta-test, so that a finite split is
        covered evenly) in parts that fit in memory; each part needs its own ``seed``, or its
        envs would repeat the first part's randomness.

        Raises:
            ValueError: the batch holds tiled copies (``copies > 1``), which a part would split,
                or ``start:stop`` is not a non-empty range inside the batch.
        """
        if self.copies != 1:
            raise ValueError("select() cannot split a batch of tiled copies (copies > 1)")
        if not 0 <= start < stop <= self.size:
            raise ValueError(f"select({start}, {stop}) is not a range of {self.size} tasks")
        part = self._map_task_tensors(lambda value: value[start:stop])
        return dataclasses.replace(self, size=stop - start, seed=seed, **part)

    def _map_task_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
        """Return ``fn`` applied to every tensor field batched over tasks in dim 0, by name."""
        batched = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == self.size:
                batched[item.name] = fn(value)
        return batched


class BatchedEnv(abc.ABC):
    """A batch of environments, one per task, following Gymnasium's vector API in torch.

    Observations, rewards and flags are tensors batched over tasks on the tasks' device. A
    lifetime lasts at most ``lifetime_steps`` steps; once an environment reports ``terminated``
    or ``truncated`` its lifetime is over and later steps are ignored by the caller.

    Common random numbers: an env built from a batch with ``copies > 1`` (``TaskBatch.repeat``)
    draws the random numbers of its own dynamics (start cells, object sides, ...) for the first
    ``num_envs // copies`` envs and tiles them ``copies`` times, so that tiled copies of a task
    driven by the same actions give the same observations and rewards. With ``copies == 1`` it
    draws for every env. ``metods_core.testing.check_task_sampler`` checks it.
    """

    single_observation_space: gym.Space
    single_action_space: gym.Space
    num_envs: int
    lifetime_steps: int

    @abc.abstractmethod
    def reset(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """Start every lifetime; return observations ``(batch, *obs_shape)`` and info.

        Re-seeds the env's randomness from the task batch's ``seed``.
        """

    @abc.abstractmethod
    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Apply ``action`` ``(batch, ...)``; return obs, reward, terminated, truncated, info.

        ``reward`` is float ``(batch,)``; ``terminated`` and ``truncated`` are bool ``(batch,)``.
        """

    @abc.abstractmethod
    def lifetime_metrics(self) -> dict[str, torch.Tensor]:
        """Return the task family's own per-task metrics of the lifetimes so far.

        Each value has shape ``(batch,)`` (a scalar per task) or ``(batch, K)`` (a curve per task,
        such as accuracy per presentation; NaN where undefined). ``episode_reward`` is always set.
        """

    def close(self) -> None:  # noqa: B027  # optional hook: most torch-native envs hold nothing
        """Release what the env holds (simulators, worker processes); the core calls it."""


class TaskSampler(abc.ABC):
    """A distribution over tasks with disjoint train and test splits (and optionally a third,
    validation split, see ``has_validation_split``).

    Built as ``Sampler(config)``. ``observation_space`` and ``action_space`` describe one task's
    environment; they are known before any task is drawn so the agent can be built first.
    """

    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    observation_space: gym.Space
    action_space: gym.Space
    lifetime_steps: int
    episodes_per_lifetime: int = 1
    """Episodes of one task per lifetime. Above 1, the env sets ``info["episode_boundary"]``
    (bool ``(batch,)``) on the last step of each episode, the agent keeps its plastic state
    across the boundary, and its encoder is told of it through one extra input."""

    @abc.abstractmethod
    def sample(self, n: int, split: Split, generator: torch.Generator) -> TaskBatch:
        """Draw ``n`` tasks of ``split`` with ``generator``; the splits never share a task.

        ``validation`` is only asked of a sampler whose ``has_validation_split()`` is true.

        A meta-test draws all its lifetimes' tasks in one call (and runs them in parts), so a
        sampler whose test split is a finite list (Meta-World's held-out goals) can cover it
        evenly: each task once before any twice.
        """

    @abc.abstractmethod
    def make_env(self, tasks: TaskBatch) -> BatchedEnv:
        """Build the batched environment of ``tasks``, on the device of the batch's tensors."""

    def evaluation_conditions(self) -> dict[str, dict[str, Any]]:
        """Return extra meta-test conditions: a name -> ``Config`` field overrides.

        ``metods evaluate`` reports the held-out metrics as trained, then again under each
        condition with the metric names prefixed by ``<name>/`` (for example larger mazes).
        """
        return {}

    def main_metric(self) -> str:
        """Return the name of the metric that ranks agents on this task family."""
        return "episode_reward"

    def has_validation_split(self) -> bool:
        """Return whether ``sample`` draws a ``validation`` split: tasks of the training
        distribution kept out of training, whose periodic meta-test (``validation/<metric>``)
        can choose ``best.ckpt`` (``trainer.best_metric: validation/success``) without the test
        split ever being looked at. False by default; a sampler whose config asks for one (the
        Meta-World tasks' ``validation_tasks``) says True."""
        return False

    def freeze_statistics(self) -> None:  # noqa: B027  # optional hook: most samplers learn nothing
        """Stop adapting to the lifetimes this sampler's envs run from now on, train split
        included (the MuJoCo tasks' running observation statistics). Meta-test calls it, so
        that an evaluation on the train tasks (``metods evaluate --split train``) sees the
        checkpoint's statistics, as a held-out one does. Samplers without such state keep the
        default, which does nothing.
        """

    def compile_env_step(self) -> None:  # noqa: B027  # optional hook
        """Compile the step of the envs this sampler builds from now on (``trainer.compile``).

        A torch-native task family whose step is many small tensor operators may compile it;
        simulator-backed families keep the default, which does nothing.
        """
