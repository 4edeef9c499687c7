"""The maze exploration task of the MetODS paper, batched over tasks in torch.

Every lifetime draws a new square maze (randomised Prim's algorithm, ``maze_generation.py``)
and a hidden goal on one of its free cells. The agent starts on a random free cell other than
the goal, sees the 3 x 3 walls around itself (1 = wall; its previous action and reward reach
it through the agent's encoder) and moves up, down, left or right; a move into a wall leaves it
in place (minus ``wall_penalty``). Reaching the goal gives ``goal_reward`` and teleports the
agent to a random free cell other than the goal, so a learner that remembers where the goal
was collects it again and again. A lifetime is truncated after ``lifetime_steps`` steps.

Follows the maze experiment of Chalvidal et al. 2022 (MetODS), itself built on the maze task of
Miconi et al. 2019 (Backpropamine), which has one fixed layout.

Splits: each (maze, goal) pair belongs to exactly one split, fixed by a parity bit: the
number of walls on a fixed pseudo-random set of cells, plus the goal's row and column, is even
for train and odd for test. Within a maze the goal is drawn uniformly among the free cells of
the split's parity; there are always some, since a connected maze has free cells of both
checkerboard colours. On top of that, as in Harlow, each split draws from its own generator
stream. A test task is therefore never a training task, by construction, not by chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, model_validator

from metods_core import BatchedEnv, ComponentConfig, Split, TaskBatch, TaskSampler
from metods_plugins.tasks.maze_generation import generate_mazes, neighbour_offsets, random_cells

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
_SPLIT_BIT = {"train": 0, "test": 1}


@dataclass
class MazeTaskBatch(TaskBatch):
    """Maze tasks: ``walls`` ``(batch, grid, grid)`` bool and ``goal`` ``(batch,)`` flat cell."""

    walls: torch.Tensor
    goal: torch.Tensor


@lru_cache(maxsize=16)
def split_mask(grid: int) -> torch.Tensor:
    """Return the fixed pseudo-random cells ``(grid * grid,)`` bool whose walls set the split.

    A SplitMix64 bit of each cell index: fixed forever, independent of torch's RNG.
    """
    bits = []
    for cell in range(grid * grid):
        z = (cell + 1) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        bits.append(bool((z ^ (z >> 31)) & 1))
    return torch.tensor(bits)


def split_parity(walls: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Return the split bit of goals on every cell: ``(batch, grid * grid)`` long, 0 or 1.

    Args:
        walls: ``(batch, grid, grid)`` bool.
        cells: ``(grid * grid,)`` long, row + column of each cell.
    """
    mask = split_mask(walls.shape[-1]).to(walls.device)
    maze_bit = (walls.flatten(1) & mask).sum(dim=1, keepdim=True)
    return (maze_bit + cells) % 2


class MazeTasks(TaskSampler):
    """The MetODS maze: find a hidden goal in a new random maze, then return to it.

    ``size`` counts the cells per side with the outer wall (``outer_wall_included=True``, the
    default): the paper's 8 x 8 maze has 6 x 6 cells inside its border. The observation is
    3 x 3 for every size, so an agent trained on one size is tested on another unchanged.
    """

    class Config(ComponentConfig):
        """Parameters of the maze task."""

        size: int = Field(8, ge=2)
        """Cells per side, the closed outer wall INCLUDED by default (8: 6 x 6 cells inside)."""
        outer_wall_included: bool = True
        """True: the grid is size x size and its border is all walls (as in Miconi's
        backpropamine maze). False: size x size cells inside, plus a border of walls."""
        lifetime_steps: int = Field(100, ge=1)
        """Steps per lifetime (one maze, one goal); truncated at the end."""
        goal_reward: float = 10.0
        """Reward for reaching the goal, after which the agent is teleported."""
        wall_penalty: float = Field(0.0, ge=0)
        """Subtracted from the reward when a move runs into a wall."""

        @model_validator(mode="after")
        def _check_size(self) -> MazeTasks.Config:
            if self.grid < 4:
                raise ValueError(
                    f"size {self.size} leaves fewer than 2 x 2 cells inside the outer wall"
                )
            return self

        @property
        def grid(self) -> int:
            """Cells per side of the stored grid, the outer wall included."""
            return self.size if self.outer_wall_included else self.size + 2

    def __init__(self, config: Config) -> None:
        self.config = config
        self.observation_space = gym.spaces.Box(0.0, 1.0, (3, 3), np.float32)
        self.action_space = gym.spaces.Discrete(4)
        self.lifetime_steps = config.lifetime_steps

    def sample(self, n: int, split: Split, generator: torch.Generator) -> MazeTaskBatch:
        """Draw ``n`` mazes and goals of ``split``; see the module docstring for disjointness."""
        stream = int(torch.randint(0, 2**62, (1,), generator=generator))
        split_generator = torch.Generator().manual_seed(2 * stream + (split == "test"))
        grid = self.config.grid
        walls = generate_mazes(n, grid, split_generator)
        rows, columns = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        parity = split_parity(walls, (rows + columns).flatten())
        goal = random_cells(~walls.flatten(1) & (parity == _SPLIT_BIT[split]), split_generator)
        env_seed = int(torch.randint(0, 2**62, (1,), generator=split_generator))
        return MazeTaskBatch(size=n, split=split, seed=env_seed, walls=walls, goal=goal)

    def make_env(self, tasks: TaskBatch) -> MazeEnv:
        """Build the batched environment of ``tasks`` on their device."""
        assert isinstance(tasks, MazeTaskBatch)
        return MazeEnv(self.config, tasks, self.observation_space, self.action_space)

    def evaluation_conditions(self) -> dict[str, dict[str, Any]]:
        """Also meta-test on larger unseen mazes (the paper's 10 x 10 transfer test)."""
        return {"maze10": {"size": 10}}

    def main_metric(self) -> str:
        """Rank agents by cumulative reward over the lifetime."""
        return "episode_reward"


class MazeEnv(BatchedEnv):
    """A batch of maze lifetimes stepped together; finished lifetimes stay frozen.

    State: ``position`` ``(batch,)`` flat cell index into ``walls`` ``(batch, grid * grid)``.
    """

    def __init__(
        self,
        config: MazeTasks.Config,
        tasks: MazeTaskBatch,
        observation_space: gym.Space,
        action_space: gym.Space,
    ) -> None:
        self.config = config
        self.device = tasks.walls.device
        self.num_envs = tasks.size
        self.lifetime_steps = config.lifetime_steps
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.seed = tasks.seed
        self.copies = tasks.copies
        self.generator = torch.Generator(device=self.device)
        grid = tasks.walls.shape[-1]
        self.walls = tasks.walls.flatten(1)
        self.goal = tasks.goal
        self.landing = ~self.walls  # free cells other than the goal: starts and teleports
        self.landing[torch.arange(self.num_envs, device=self.device), self.goal] = False
        self._moves = neighbour_offsets(grid, self.device)  # UP, DOWN, LEFT, RIGHT
        rows = torch.arange(-1, 2, device=self.device)
        self._view = (rows.unsqueeze(1) * grid + rows.unsqueeze(0)).flatten()

    def reset(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """Place every agent on a random free cell other than the goal."""
        n, device = self.num_envs, self.device
        self.generator.manual_seed(self.seed)
        self.position = self._random_landing()
        self.steps = torch.zeros(n, dtype=torch.long, device=device)
        self.done = torch.zeros(n, dtype=torch.bool, device=device)
        self.total_reward = torch.zeros(n, device=device)
        self.rewards_found = torch.zeros(n, dtype=torch.long, device=device)
        self.first_reward_step = torch.full((n,), self.lifetime_steps, device=device)
        return self._observe(), {}

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Move every running agent, reward and teleport those on the goal; see the module."""
        cfg = self.config
        active = ~self.done
        target = self.position + self._moves[action.long()]
        blocked = active & self.walls.gather(1, target.unsqueeze(1)).squeeze(1)
        moved = torch.where(active & ~blocked, target, self.position)
        found = active & (moved == self.goal)
        reward = found * cfg.goal_reward - blocked * cfg.wall_penalty
        # Drawn at every step, used where the goal was found: no data-dependent control flow.
        self.position = torch.where(found, self._random_landing(), moved)
        self.steps = self.steps + active.long()
        first = found & (self.rewards_found == 0)
        self.first_reward_step = torch.where(first, self.steps.float(), self.first_reward_step)
        self.rewards_found = self.rewards_found + found.long()
        self.total_reward = self.total_reward + reward
        terminated = torch.zeros_like(active)
        truncated = active & (self.steps >= self.lifetime_steps)
        self.done = self.done | truncated
        return self._observe(), reward.float(), terminated, truncated, {}

    def _random_landing(self) -> torch.Tensor:
        """Return a random landing cell ``(batch,)`` per env, drawn for the base tasks and tiled
        over the batch's ``copies`` (common random numbers; one draw per env when ``copies`` is
        1)."""
        base = self.num_envs // self.copies
        return random_cells(self.landing[:base], self.generator).repeat(self.copies)

    def _observe(self) -> torch.Tensor:
        """Return the walls around each agent: ``(batch, 3, 3)`` float, 1 = wall."""
        cells = self.position.unsqueeze(1) + self._view
        return self.walls.gather(1, cells).view(self.num_envs, 3, 3).float()

    def lifetime_metrics(self) -> dict[str, torch.Tensor]:
        """Per-task cumulative reward, steps to the first reward (``lifetime_steps`` if never),
        success (goal found at least once) and the number of rewards found."""
        return {
            "episode_reward": self.total_reward,
            "steps_to_first_reward": self.first_reward_step,
            "success": (self.rewards_found > 0).float(),
            "rewards_found": self.rewards_found.float(),
        }
