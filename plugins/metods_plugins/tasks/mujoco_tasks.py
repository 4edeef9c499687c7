"""Motor-control task families on Gymnasium's MuJoCo v5 robots (an optional extra).

Three families of the meta-RL literature (Finn et al. 2017, MAML, section 5.3; the MetODS paper's
motor-control experiments), each task a target for the same robot:

- ``cheetah_vel``: HalfCheetah-v5 runs at a target velocity ``v*`` (uniform in
  ``[min_velocity, max_velocity]``). Reward ``r = -|v_x - v*| + reward_ctrl``.
- ``cheetah_dir``: HalfCheetah-v5 runs forward (``d = +1``) or backward (``d = -1``). Reward
  ``r = d * v_x + reward_ctrl``.
- ``ant_dir``: Ant-v5 runs along a direction at angle ``theta`` in the plane: uniform in
  ``[0, 2 pi)`` (``directions: plane``, ProMP's 2-D ant-direction task) or 0 or ``pi``
  (``directions: forward_backward``, forward or backward along x, MAML's ant-direction task).
  Reward ``r = cos(theta) v_x + sin(theta) v_y + reward_survive + reward_ctrl +
  reward_contact``: Ant-v5's own reward with its forward term ``v_x`` replaced by the velocity
  along the direction.

``v_x``, ``v_y`` are the step's ``info["x_velocity"]``, ``info["y_velocity"]`` (torso
displacement over ``dt``); ``reward_ctrl`` (``-w * sum(a^2)``: ``w`` is 0.1 for HalfCheetah-v5
and 0.5 for Ant-v5), ``reward_contact`` and ``reward_survive`` are Gymnasium's info terms, at
their v5 defaults unless the recipe sets ``task.ctrl_cost_weight`` (and, for the Ant,
``task.healthy_reward``, ``task.contact_cost_weight``). Ant is built with
``terminate_when_unhealthy=False`` (an ant on its back stays there and earns no survive
reward) and without contact forces in its observation (27 numbers), so every lifetime has the
same length.

A lifetime is ``episodes_per_lifetime`` episodes of ``episode_steps`` steps of one task (see
``mujoco_env.py``). ``impair_actuator=K`` forces actuator K's torque to zero at every step, the
paper's robot-impairment test; it is meant for meta-test only:
``metods evaluate RUN_DIR --override task.impair_actuator=K``.

Splits: as in Harlow, train and test tasks come from disjoint generator streams, and each task
carries its own simulator reset seed (``reset_seeds``). ``cheetah_dir`` has only two directions,
so its splits share directions and differ by their initial-state noise.

``mujoco`` is imported when a sampler is built, never at import: without it, building one
raises ``MetodsError`` with the install hint ``pip install "metods-plugins[mujoco]"``.
"""

from __future__ import annotations

import abc
import importlib
import math
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, model_validator

from metods_core import MetodsError, Split, TaskBatch, TaskSampler
from metods_plugins.tasks.mujoco_env import MuJoCoBatchedEnv
from metods_plugins.tasks.mujoco_normalizer import (
    ObservationStatistics,
    ObservationStatisticsConfig,
    RunningObservationNormalizer,
)
from metods_plugins.tasks.simulator_pool import SimulatorPool, VectorStrategy

INSTALL_HINT = 'pip install "metods-plugins[mujoco]"'
_ANT_KWARGS: dict[str, Any] = {
    "terminate_when_unhealthy": False,
    "include_cfrc_ext_in_observation": False,
}


def require_mujoco() -> None:
    """Import ``mujoco`` or raise ``MetodsError`` with the install hint."""
    try:
        importlib.import_module("mujoco")
    except ImportError as error:
        raise MetodsError(
            f"the MuJoCo tasks need the optional dependency 'mujoco' ({error}); "
            f"install it with: {INSTALL_HINT}"
        ) from None


def make_mujoco_env(env_id: str, episode_steps: int, **kwargs: Any) -> gym.Env:
    """Build one Gymnasium MuJoCo environment whose time limit is ``episode_steps``."""
    return gym.make(env_id, max_episode_steps=episode_steps, disable_env_checker=True, **kwargs)


@lru_cache(maxsize=8)
def _spaces(
    env_id: str, kwargs: tuple[tuple[str, Any], ...]
) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """Return the float32 observation space and the action space of ``env_id``."""
    env = make_mujoco_env(env_id, 1, **dict(kwargs))
    shape = env.observation_space.shape
    assert isinstance(env.action_space, gym.spaces.Box) and shape is not None
    env.close()
    observation_space = gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
    return observation_space, env.action_space


@dataclass
class MuJoCoTaskBatch(TaskBatch):
    """MuJoCo tasks: a ``target`` ``(batch,)`` (velocity, direction or angle) and
    ``reset_seeds`` ``(batch,)`` int64, each simulator's reset seed."""

    target: torch.Tensor
    reset_seeds: torch.Tensor


class _MuJoCoTasks(ObservationStatistics, TaskSampler, abc.ABC):
    """What the three families share; each sets the robot, the task draw and the reward."""

    env_id: ClassVar[str]
    env_kwargs: ClassVar[dict[str, Any]] = {}
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box

    class Config(ObservationStatisticsConfig):
        """Parameters shared by the MuJoCo task families."""

        RESUMABLE_FIELDS = ("statistics_steps", "vector_strategy", "workers")
        """Where the simulators step changes no number, so a resume may change it."""

        episode_steps: int = Field(200, ge=1)
        """Steps per episode (the paper: 200)."""
        episodes_per_lifetime: int = Field(1, ge=1)
        """Episodes of the same task per lifetime; the synapses persist across them."""
        impair_actuator: int | None = Field(None, ge=0)
        """Meta-test only: force this actuator's torque to 0 (robot impairment); None: intact."""
        normalize_observations: bool = False
        """Give the agent each observation standardised by the running mean and standard
        deviation of the training lifetimes' observations (clipped to +-10; frozen at
        meta-test; saved in the checkpoints). See ``mujoco_normalizer.py``."""
        vector_strategy: VectorStrategy = "sync"
        """``sync``: the simulators step one after another in this process; ``async``: one
        worker process per task (Gymnasium's AsyncVectorEnv), worth it only with spare cores."""
        workers: int = Field(0, ge=0)
        """Step the simulators in this many worker processes instead, each a contiguous share of
        the batch in its own sync vector env, in parallel (``simulator_workers.py``): W is
        chosen for the cores, where ``async`` makes one process per task. 0: as
        ``vector_strategy`` says. The lifetimes are the same to the bit either way."""
        ctrl_cost_weight: float | None = Field(None, ge=0)
        """Weight ``w`` of the control cost ``-w * sum(a^2)`` in the reward; None: the robot's
        Gymnasium v5 default (HalfCheetah 0.1, Ant 0.5, as ProMP's 2-D ant-direction task);
        Ant variants in the literature differ here."""

        @model_validator(mode="after")
        def _one_way_to_step(self) -> _MuJoCoTasks.Config:
            if self.workers > 0 and self.vector_strategy == "async":
                raise ValueError(
                    "workers and vector_strategy: async both put the simulators in worker "
                    "processes: keep one (workers: W for W processes stepping shares of the "
                    "batch, or async for one process per task)"
                )
            return self

    def __init__(self, config: Config) -> None:
        require_mujoco()
        self.config = config
        env_kwargs = {**self.env_kwargs, **self._reward_weights()}
        self.observation_space, self.action_space = _spaces(
            self.env_id, tuple(sorted(env_kwargs.items()))
        )
        actuators = int(self.action_space.shape[0])
        if config.impair_actuator is not None and config.impair_actuator >= actuators:
            raise MetodsError(
                f"impair_actuator={config.impair_actuator}, but {self.env_id} has {actuators} "
                f"actuators (0 to {actuators - 1})"
            )
        self.lifetime_steps = config.episode_steps * config.episodes_per_lifetime
        self.episodes_per_lifetime = config.episodes_per_lifetime
        dims = int(self.observation_space.shape[0])  # type: ignore[index]
        self.normalizer = (
            RunningObservationNormalizer(dims, max_count=config.statistics_steps)
            if config.normalize_observations
            else None
        )
        self.simulators = SimulatorPool(
            partial(make_mujoco_env, self.env_id, config.episode_steps, **env_kwargs),
            config.vector_strategy,
            config.workers,
        )

    def _reward_weights(self) -> dict[str, float]:
        """Return the Gymnasium keyword arguments of the reward weights the recipe sets."""
        names = ("ctrl_cost_weight", "healthy_reward", "contact_cost_weight")
        chosen = {name: getattr(self.config, name, None) for name in names}
        return {name: float(value) for name, value in chosen.items() if value is not None}

    @abc.abstractmethod
    def _draw_targets(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Draw the targets ``(n,)`` of ``n`` tasks."""

    @abc.abstractmethod
    def task_velocity(self, info: dict[str, Any], target: np.ndarray) -> np.ndarray:
        """Return the velocity the reward reads, ``(batch,)``, from a vector step's ``info``:
        ``v_x`` (cheetah_vel), ``d * v_x`` (cheetah_dir), the speed along ``theta`` (ant_dir)."""

    @abc.abstractmethod
    def _reward(self, info: dict[str, Any], target: np.ndarray) -> np.ndarray:
        """Return the rewards ``(batch,)`` of a vector step's ``info`` for ``target``."""

    def sample(self, n: int, split: Split, generator: torch.Generator) -> MuJoCoTaskBatch:
        """Draw ``n`` tasks; train and test use disjoint generator streams."""
        stream = int(torch.randint(0, 2**62, (1,), generator=generator))
        split_generator = torch.Generator().manual_seed(2 * stream + (split == "test"))
        target = self._draw_targets(n, split_generator)
        reset_seeds = torch.randint(0, 2**31, (n,), generator=split_generator)
        env_seed = int(torch.randint(0, 2**62, (1,), generator=split_generator))
        return MuJoCoTaskBatch(
            size=n, split=split, seed=env_seed, target=target, reset_seeds=reset_seeds
        )

    def make_env(self, tasks: TaskBatch) -> MuJoCoBatchedEnv:
        """Lend one simulator per task from the sampler's pool (built on first use)."""
        assert isinstance(tasks, MuJoCoTaskBatch)
        target = tasks.target.detach().cpu().double().numpy()
        return MuJoCoBatchedEnv(
            pool=self.simulators,
            num_envs=tasks.size,
            reset_seeds=[int(seed) for seed in tasks.reset_seeds.tolist()],
            reward_fn=partial(self._reward, target=target),
            episode_steps=self.config.episode_steps,
            episodes_per_lifetime=self.config.episodes_per_lifetime,
            impair_actuator=self.config.impair_actuator,
            normalizer=self.normalizer,
            update_normalizer=tasks.split == "train",
            observation_space=self.observation_space,
            action_space=self.action_space,
            device=tasks.target.device,
        )


class CheetahVelTasks(_MuJoCoTasks):
    """HalfCheetah runs at a target velocity: ``r = -|v_x - v*| + reward_ctrl``."""

    env_id = "HalfCheetah-v5"

    class Config(_MuJoCoTasks.Config):
        """Parameters of the cheetah-velocity family."""

        min_velocity: float = 0.0
        """Lowest target velocity (m/s)."""
        max_velocity: float = 3.0
        """Highest target velocity (m/s)."""

        @model_validator(mode="after")
        def _check_range(self) -> CheetahVelTasks.Config:
            if self.min_velocity > self.max_velocity:
                raise ValueError("min_velocity must not exceed max_velocity")
            return self

    config: Config

    def _draw_targets(self, n: int, generator: torch.Generator) -> torch.Tensor:
        low, high = self.config.min_velocity, self.config.max_velocity
        return low + (high - low) * torch.rand(n, generator=generator)

    def task_velocity(self, info: dict[str, Any], target: np.ndarray) -> np.ndarray:
        return np.asarray(info["x_velocity"])

    def _reward(self, info: dict[str, Any], target: np.ndarray) -> np.ndarray:
        return -np.abs(self.task_velocity(info, target) - target) + info["reward_ctrl"]


class CheetahDirTasks(_MuJoCoTasks):
    """HalfCheetah runs forward or backward: ``r = d * v_x + reward_ctrl``, ``d = +-1``."""

    env_id = "HalfCheetah-v5"

    def _draw_targets(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1

    def task_velocity(self, info: dict[str, Any], target: np.ndarray) -> np.ndarray:
        return target * info["x_velocity"]

    def _reward(self, info: dict[str, Any], target: np.ndarray) -> np.ndarray:
        return self.task_velocity(info, target) + info["reward_ctrl"]


class AntDirTasks(_MuJoCoTasks):
    """Ant runs along an angle ``theta`` in the plane: Ant-v5's reward with ``v_x`` replaced by
    ``cos(theta) v_x + sin(theta) v_y``."""

    env_id = "Ant-v5"
    env_kwargs = _ANT_KWARGS

    class Config(_MuJoCoTasks.Config):
        """Parameters of the ant-direction family."""

        healthy_reward: float | None = Field(None, ge=0)
        """Survival bonus per step while the torso is healthy; None: Ant-v5's default, 1."""
        contact_cost_weight: float | None = Field(None, ge=0)
        """Weight of the contact cost ``-w * sum(clip(cfrc_ext)^2)``; None: Ant-v5's default,
        5e-4."""
        directions: Literal["plane", "forward_backward"] = "plane"
        """Where the angle ``theta`` is drawn: ``plane``, uniform in ``[0, 2 pi)`` (ProMP's 2-D
        ant-direction task); ``forward_backward``, 0 or ``pi`` with equal odds, forward or
        backward along x (the ant-direction task of MAML, Finn et al. 2017)."""

    config: Config

    def _draw_targets(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.config.directions == "forward_backward":
            return torch.randint(0, 2, (n,), generator=generator).float() * math.pi
        return torch.rand(n, generator=generator) * (2 * math.pi)

    def task_velocity(self, info: dict[str, Any], target: np.ndarray) -> np.ndarray:
        return np.cos(target) * info["x_velocity"] + np.sin(target) * info["y_velocity"]

    def _reward(self, info: dict[str, Any], target: np.ndarray) -> np.ndarray:
        forward = self.task_velocity(info, target)
        costs = info["reward_ctrl"] + info["reward_contact"]
        return forward + info["reward_survive"] + costs
