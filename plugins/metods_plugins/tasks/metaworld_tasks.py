"""Meta-World manipulation benchmarks ML1 and ML10 (Yu et al. 2019; metaworld 3.1.1, an optional
extra), the MetODS paper's Meta-World setting.

- ``metaworld_ml1``: one task class (``env_name``: reach-v3, push-v3, pick-place-v3, ...); the
  train and test splits are the benchmark's own 50 train and 50 test goal positions
  (``metaworld.ML1(env_name, seed)``).
- ``metaworld_ml10``: the benchmark's 10 train task classes (50 goals each) for training and its
  5 held-out classes (50 goals each) for the test split (``metaworld.ML10(seed)``).

The goal is hidden from the observation (Meta-World's ML setting: 39 numbers, the last three
zero); the agent must find it from the reward. ``observation: robot`` keeps only the robot's own
state (hand position and gripper opening, now and one step before: 8 numbers), as the paper
describes its agents' input; the objects' positions, which differ between a class's goals,
then no longer tell the agent which train goal it is in (see ``ROBOT_COLUMNS``).

A lifetime is ``rollouts`` rollouts of ``rollout_steps`` steps of one task (the paper: 10 x
500), with the synapses kept across rollouts and the boundary told to the agent
(``info["episode_boundary"]``). Rewards are Meta-World's own, of ``reward_function_version`` (v2,
in [0, 10] per step, by default). Metrics: ``success`` (the fraction of a lifetime's rollouts
that reach Meta-World's success at any step), ``success/rollout_k`` per rollout index, the
return, and for ML10 ``success/<class>`` per task class of the split (``pick-place-v3``, ...).

``sample`` draws task indices into the split's task list, so a task batch is a few integers;
the benchmark's task lists are built once per process (``benchmark_seed`` fixes Meta-World's
goal draw). ``metaworld`` is imported when a sampler is built, never at import: without it,
building one raises ``MetodsError`` with the install hint
``pip install "metods-plugins[metaworld]"``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache, partial
from types import ModuleType
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field

from metods_core import MetodsError, Split, TaskBatch, TaskSampler
from metods_plugins.tasks.metaworld_env import (
    MetaWorldBatchedEnv,
    MetaWorldSimulators,
    MetaWorldStepper,
)
from metods_plugins.tasks.mujoco_normalizer import (
    ObservationStatistics,
    ObservationStatisticsConfig,
    RunningObservationNormalizer,
)
from metods_plugins.tasks.simulator_workers import InProcessSteppers, SimulatorWorkers, Steppers

INSTALL_HINT = 'pip install "metods-plugins[metaworld]"'

ROBOT_COLUMNS = (0, 1, 2, 3, 18, 19, 20, 21)
"""Columns of Meta-World's 39-number observation that are the robot's own state: the hand's
position (0-2) and the gripper's opening (3), then the same one step before (18-21). Columns
4-17 (and 22-35 one step before) are the objects' positions and orientations; 36-38 the goal,
zero in the ML benchmarks."""


def require_metaworld() -> ModuleType:
    """Import and return ``metaworld``, or raise ``MetodsError`` with the install hint."""
    try:
        return importlib.import_module("metaworld")
    except ImportError as error:
        raise MetodsError(
            f"the Meta-World tasks need the optional dependency 'metaworld' ({error}); "
            f"install it with: {INSTALL_HINT}"
        ) from None


@lru_cache(maxsize=8)
def _benchmark(kind: str, env_name: str, seed: int) -> Any:
    """Build Meta-World's benchmark once per process (it draws 50 goals per class)."""
    metaworld = require_metaworld()
    if kind == "ml1":
        if env_name not in metaworld.ML1.ENV_NAMES:
            raise MetodsError(f"env_name {env_name!r} is not a Meta-World v3 task")
        return metaworld.ML1(env_name, seed=seed)
    return metaworld.ML10(seed=seed)


def _build_simulator(reward_function_version: str, rollout_steps: int, env_name: str) -> Any:
    """Build one Meta-World environment of class ``env_name`` whose rollouts last
    ``rollout_steps`` steps (it needs ``set_task`` before its first reset)."""
    classes = require_metaworld().env_dict.ALL_V3_ENVIRONMENTS
    simulator = classes[env_name](reward_function_version=reward_function_version)
    simulator.max_path_length = rollout_steps
    return simulator


@lru_cache(maxsize=8)
def _simulators(reward_function_version: str, rollout_steps: int) -> MetaWorldSimulators:
    """The process's pool of simulators of one reward version and rollout length, shared by
    every sampler built with them (a lent simulator is never lent twice)."""
    return MetaWorldSimulators(partial(_build_simulator, reward_function_version, rollout_steps))


def _worker_stepper(reward_function_version: str, rollout_steps: int) -> MetaWorldStepper:
    """Build a worker process's stepper (``task.workers``), over that process's own pool."""
    return MetaWorldStepper(_simulators(reward_function_version, rollout_steps))


def _split_ids(train: int, total: int, validation: int, seed: int) -> dict[str, torch.Tensor]:
    """Return the indices of each split: the benchmark's ``train`` tasks ``0..train-1`` less
    ``validation`` of them (a draw seeded by ``seed``, so fixed for a benchmark), the
    ``validation`` ones, and its test tasks ``train..total-1``; each ascending, int64.

    Raises:
        MetodsError: ``validation`` leaves no train task.
    """
    if validation >= train:
        raise MetodsError(
            f"task.validation_tasks is {validation}, but the benchmark has {train} train tasks: "
            f"keep at least one for training (validation_tasks at most {train - 1})"
        )
    held = torch.randperm(train, generator=torch.Generator().manual_seed(seed))[:validation]
    kept = torch.ones(train, dtype=torch.bool)
    kept[held] = False
    return {
        "train": torch.arange(train)[kept],
        "validation": held.sort().values,
        "test": torch.arange(train, total),
    }


@dataclass
class MetaWorldTaskBatch(TaskBatch):
    """Meta-World tasks: ``task_id`` ``(batch,)`` int64, an index into the sampler's ``tasks``
    (the benchmark's train tasks, then its test tasks)."""

    task_id: torch.Tensor


class _MetaWorldTasks(ObservationStatistics, TaskSampler):
    """What ML1 and ML10 share; each names its benchmark."""

    kind: str
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box

    class Config(ObservationStatisticsConfig):
        """Parameters shared by the Meta-World benchmarks."""

        RESUMABLE_FIELDS = ("statistics_steps", "workers")
        """Where the simulators step changes no number, so a resume may change it."""

        rollout_steps: int = Field(500, ge=1)
        """Steps per rollout (Meta-World and the paper: 500)."""
        rollouts: int = Field(10, ge=1)
        """Rollouts of the same task per lifetime (the paper: 10); the synapses persist."""
        reward_function_version: Literal["v1", "v2"] = "v2"
        """Meta-World 3's reward function version. v2, its default, is in [0, 10] per step and
        nearly flat near the goal (reach: 98.6 % of its maximum 6 cm away); v1, the benchmark's
        first reward, pays sharply for the last centimetres (reach: about 2,250 per step at a goal
        25 cm from the start; scale it with ``reward_scale``)."""
        reward_scale: float = Field(1.0, gt=0)
        """Factor on Meta-World's reward before the agent (its previous-reward input) and the
        meta-optimizer see it; the logged return is in these units too. Success does not depend
        on it. 0.004 brings reach's v1 reward into v2's range ([0, 9])."""
        benchmark_seed: int = Field(0, ge=0)
        """Seed of Meta-World's own goal draw, which fixes the benchmark's train and test tasks."""
        validation_tasks: int = Field(0, ge=0)
        """Keep this many of the benchmark's train tasks out of training as a validation split
        (a fixed draw, seeded by ``benchmark_seed``, across all train classes): the periodic
        meta-test also meets them (``validation/success``), and ``trainer.best_metric:
        validation/success`` keeps the checkpoint they rate best, so that no test task chooses
        it. The agent then trains on the others only; the test split is unchanged. 0: none."""
        observation: Literal["full", "robot"] = "full"
        """``full``: Meta-World's 39 numbers (hand, gripper, objects, the same one step before,
        the hidden goal's zeros); ``robot``: only the hand's position and the gripper's opening,
        now and one step before (8 numbers, ``ROBOT_COLUMNS``). On ML1 reach each train goal
        comes with its own puck position, so with ``full`` a policy can recognise the train
        goals by the puck instead of searching with the reward (docs/results.md)."""
        workers: int = Field(0, ge=0)
        """Step the simulators in this many worker processes, each a contiguous share of the
        batch, in parallel (``simulator_workers.py``); 0: one after another in the training
        process. Worth it with a spare core per worker: Meta-World's simulation is most of a
        collection (docs/results.md). The lifetimes are the same to the bit either way."""
        normalize_observations: bool = False
        """Give the agent running-normalised observations (statistics of training lifetimes,
        frozen at meta-test, saved in the checkpoints; see ``mujoco_normalizer.py``). Meta-World's
        positions vary by centimetres within a lifetime: unnormalised, the reward input spreads
        the encoder's pre-activations 11 times more than all 39 observations together
        (docs/results.md)."""

    config: Config

    def __init__(self, config: Config) -> None:
        require_metaworld()
        self.config = config
        benchmark = _benchmark(self.kind, getattr(config, "env_name", ""), config.benchmark_seed)
        self.tasks: list[Any] = [*benchmark.train_tasks, *benchmark.test_tasks]
        """Every task: the benchmark's train tasks, then its test tasks."""
        self.split_ids = _split_ids(
            len(benchmark.train_tasks),
            len(self.tasks),
            config.validation_tasks,
            config.benchmark_seed,
        )
        """Each split's indices into ``tasks``, ascending."""
        self.train_class_names = sorted({task.env_name for task in benchmark.train_tasks})
        self.test_class_names = sorted({task.env_name for task in benchmark.test_tasks})
        self.simulators = _simulators(config.reward_function_version, config.rollout_steps)
        """This process's pool of simulators (the probe below, and ``workers: 0``)."""
        self._steppers: Steppers | None = None
        probe = self.simulators.acquire([self.tasks[0].env_name])
        space = probe[0].observation_space
        self.simulators.release([self.tasks[0].env_name], probe)
        self.columns = list(ROBOT_COLUMNS) if config.observation == "robot" else None
        """The observation columns the agent sees (``None``: all of them)."""
        low, high = np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)
        if self.columns is not None:
            low, high = low[self.columns], high[self.columns]
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.lifetime_steps = config.rollout_steps * config.rollouts
        self.episodes_per_lifetime = config.rollouts
        dims = int(self.observation_space.shape[0])
        self.normalizer = (
            RunningObservationNormalizer(dims, max_count=config.statistics_steps)
            if config.normalize_observations
            else None
        )

    def reported_classes(self, split: Split) -> list[str]:
        """Return the task classes of ``split`` whose success is reported one by one
        (``success/<class>``): all of them when the split has several (ML10), none otherwise."""
        names = self.test_class_names if split == "test" else self.train_class_names
        return names if len(names) > 1 else []

    def task_names(self, tasks: MetaWorldTaskBatch) -> list[str]:
        """Return the Meta-World class of each task (``reach-v3``, ...)."""
        return [self.tasks[int(i)].env_name for i in tasks.task_id.tolist()]

    def sample(self, n: int, split: Split, generator: torch.Generator) -> MetaWorldTaskBatch:
        """Draw ``n`` tasks of the benchmark's ``split``.

        Train: with replacement, independent draws (the meta-objective's expectation over
        tasks). Test and validation: without replacement, in passes over the split in a random
        order, so a meta-test of as many lifetimes as held-out tasks meets each of them once
        (Meta-World scores a policy on its whole test set); drawn with replacement, 50 lifetimes
        met about 32 of the 50 goals and the figure moved with which ones (docs/results.md).

        Raises:
            ValueError: ``validation`` without ``validation_tasks``.
        """
        if split == "validation" and not self.has_validation_split():
            raise ValueError("this sampler has no validation split: set task.validation_tasks")
        ids = self.split_ids[split]
        if split == "train":
            task_id = ids[torch.randint(0, len(ids), (n,), generator=generator)]
        else:
            passes = -(-n // len(ids))
            order = [torch.randperm(len(ids), generator=generator) for _ in range(passes)]
            task_id = ids[torch.cat(order)[:n]]
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return MetaWorldTaskBatch(size=n, split=split, seed=seed, task_id=task_id)

    def make_env(self, tasks: TaskBatch) -> MetaWorldBatchedEnv:
        """Lend one simulator per task from the sampler's pool (built on first use).

        Each simulator is seeded from ``tasks.seed`` and its task's index among the base tasks,
        so the tiled copies of ``tasks.repeat(k)`` share their randomness.
        """
        assert isinstance(tasks, MetaWorldTaskBatch)
        base = tasks.size // tasks.copies
        generator = torch.Generator().manual_seed(tasks.seed % 2**63)
        base_seeds = torch.randint(0, 2**31, (base,), generator=generator).tolist()
        ids = [int(i) for i in tasks.task_id.tolist()]
        return MetaWorldBatchedEnv(
            steppers=self.steppers(),
            env_names=[self.tasks[i].env_name for i in ids],
            tasks=[self.tasks[i] for i in ids],
            seeds=[int(base_seeds[k % base]) for k in range(tasks.size)],
            rollout_steps=self.config.rollout_steps,
            rollouts=self.config.rollouts,
            observation_space=self.observation_space,
            action_space=self.action_space,
            device=tasks.task_id.device,
            normalizer=self.normalizer,
            update_normalizer=tasks.split == "train",
            columns=self.columns,
            class_names=self.reported_classes(tasks.split),
            reward_scale=self.config.reward_scale,
        )

    def steppers(self) -> Steppers:
        """Return where this sampler's simulators step: a stepper in this process, or
        ``workers`` worker processes (started on the first call, stopped with the sampler)."""
        if self._steppers is None:
            if self.config.workers == 0:
                self._steppers = InProcessSteppers(MetaWorldStepper(self.simulators))
            else:
                build = partial(
                    _worker_stepper, self.config.reward_function_version, self.config.rollout_steps
                )
                self._steppers = SimulatorWorkers(build, self.config.workers)
        return self._steppers

    def main_metric(self) -> str:
        """Meta-World ranks agents by success rate."""
        return "success"

    def has_validation_split(self) -> bool:
        """True with ``validation_tasks`` above 0."""
        return self.config.validation_tasks > 0


class MetaWorldML1Tasks(_MetaWorldTasks):
    """ML1: the train and test goals of one Meta-World task class."""

    kind = "ml1"

    class Config(_MetaWorldTasks.Config):
        """Parameters of ML1."""

        env_name: str = "reach-v3"
        """The Meta-World v3 task class (reach-v3, push-v3, pick-place-v3, ...)."""

    config: Config


class MetaWorldML10Tasks(_MetaWorldTasks):
    """ML10: 10 train task classes; the test split is the 5 held-out classes."""

    kind = "ml10"
