"""The 1-D Harlow task (one-shot learning), batched over tasks in torch.

A circular line of ``line_length`` cells; the agent sees the ``view`` cells centred on itself
and moves stay / left / right. Reaching the fixation cross gives ``fixation_reward`` and shows
the episode's two objects ``object_offset`` cells either side of it (sides shuffled at every
presentation). Reaching an object ends the presentation: ``correct_reward`` for the episode's
rewarded object, ``wrong_reward`` for the other; for that one step the agent sees the chosen
object under itself (and the reward through its encoder), then the fixation cross reappears
``object_offset`` cells to a random side. An episode -- one lifetime -- ends after ``trials``
presentations or ``max_steps`` steps. Objects are random vectors drawn anew for every episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, model_validator

from metods_core import BatchedEnv, ComponentConfig, Split, TaskBatch, TaskSampler

STAY, LEFT, RIGHT = 0, 1, 2


@dataclass
class HarlowTaskBatch(TaskBatch):
    """Harlow tasks: ``objects`` ``(batch, 2, object_dim)``; object 0 is the rewarded one."""

    objects: torch.Tensor


class HarlowTasks(TaskSampler):
    """The 1-D Harlow task of the MetODS paper: find which of two new objects is rewarded."""

    class Config(ComponentConfig):
        """Parameters of the 1-D Harlow task."""

        line_length: int = Field(17, ge=5)
        """Cells on the circular line."""
        view: int = Field(9, ge=3)
        """Visible cells centred on the agent (odd)."""
        object_offset: int = Field(3, ge=1)
        """Distance from the fixation cross to each object, and from a choice to the next cross."""
        trials: int = Field(6, ge=1)
        """Presentations per episode."""
        max_steps: int = Field(75, ge=1)
        """Steps per episode at most (the lifetime's length)."""
        object_dim: int = Field(8, ge=1)
        """Length of the random vector that shows an object."""
        fixation_reward: float = 0.2
        """Reward for reaching the fixation cross."""
        correct_reward: float = 1.0
        """Reward for choosing the episode's rewarded object."""
        wrong_reward: float = -1.0
        """Reward for choosing the other object."""

        @model_validator(mode="after")
        def _check_geometry(self) -> HarlowTasks.Config:
            if self.view % 2 == 0:
                raise ValueError(f"view must be odd so the agent is at its centre, got {self.view}")
            if 2 * self.object_offset >= self.line_length:
                raise ValueError("object_offset must be less than half of line_length")
            return self

    def __init__(self, config: Config) -> None:
        self.config = config
        channels = 1 + config.object_dim
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (config.view, channels), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.lifetime_steps = config.max_steps

    def sample(self, n: int, split: Split, generator: torch.Generator) -> HarlowTaskBatch:
        """Draw ``n`` episodes' object pairs; train and test use disjoint generator streams."""
        stream = int(torch.randint(0, 2**62, (1,), generator=generator))
        split_generator = torch.Generator().manual_seed(2 * stream + (split == "test"))
        objects = torch.rand(n, 2, self.config.object_dim, generator=split_generator) * 2 - 1
        env_seed = int(torch.randint(0, 2**62, (1,), generator=split_generator))
        return HarlowTaskBatch(size=n, split=split, seed=env_seed, objects=objects)

    def make_env(self, tasks: TaskBatch) -> HarlowEnv:
        """Build the batched environment of ``tasks`` on their device."""
        assert isinstance(tasks, HarlowTaskBatch)
        return HarlowEnv(self.config, tasks, self.observation_space, self.action_space)


class HarlowEnv(BatchedEnv):
    """A batch of Harlow episodes stepped together; finished episodes stay frozen."""

    def __init__(
        self,
        config: HarlowTasks.Config,
        tasks: HarlowTaskBatch,
        observation_space: gym.Space,
        action_space: gym.Space,
    ) -> None:
        self.config = config
        self.objects = tasks.objects
        self.device = tasks.objects.device
        self.num_envs = tasks.size
        self.lifetime_steps = config.max_steps
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.seed = tasks.seed
        self.copies = tasks.copies
        self.generator = torch.Generator(device=self.device)
        half = config.view // 2
        self._offsets = torch.arange(-half, half + 1, device=self.device)
        self._moves = torch.tensor([0, -1, 1], device=self.device)
        self._batch = torch.arange(self.num_envs, device=self.device)

    def _random_sides(self) -> torch.Tensor:
        """Return ``(batch,)`` of -1 or +1, uniformly; drawn for the base tasks and tiled over
        the batch's ``copies`` (common random numbers; one draw per env when ``copies`` is 1)."""
        base = self.num_envs // self.copies
        bits = torch.rand(base, generator=self.generator, device=self.device) < 0.5
        return (bits.long() * 2 - 1).repeat(self.copies)

    def reset(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """Place every agent at cell 0 with a fixation cross at a random side."""
        n, device = self.num_envs, self.device
        self.generator.manual_seed(self.seed)
        zeros = torch.zeros(n, dtype=torch.long, device=device)
        self.position = zeros.clone()
        self.fixation = (self._random_sides() * self.config.object_offset) % self.config.line_length
        self.fixation_visible = torch.ones(n, dtype=torch.bool, device=device)
        self.objects_visible = torch.zeros(n, dtype=torch.bool, device=device)
        self.left_cell = zeros.clone()
        self.right_cell = zeros.clone()
        self.left_object = zeros.clone()  # index into objects of the object on the left
        self.showing_choice = torch.zeros(n, dtype=torch.bool, device=device)
        self.chosen_object = zeros.clone()
        self.presentations = zeros.clone()
        self.steps = zeros.clone()
        self.done = torch.zeros(n, dtype=torch.bool, device=device)
        self.total_reward = torch.zeros(n, device=device)
        self.choices = torch.full((n, self.config.trials), float("nan"), device=device)
        return self._observe(), {}

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Move every running agent and apply the task's rules; see the module docstring."""
        cfg = self.config
        active = ~self.done
        length = cfg.line_length
        self.position = (self.position + self._moves[action] * active) % length
        self.showing_choice = torch.zeros_like(self.showing_choice)
        reward = torch.zeros(self.num_envs, device=self.device)

        at_fixation = active & self.fixation_visible & (self.position == self.fixation)
        reward = reward + at_fixation * cfg.fixation_reward
        self.fixation_visible = self.fixation_visible & ~at_fixation
        self.objects_visible = self.objects_visible | at_fixation
        self.left_cell = torch.where(
            at_fixation, (self.position - cfg.object_offset) % length, self.left_cell
        )
        self.right_cell = torch.where(
            at_fixation, (self.position + cfg.object_offset) % length, self.right_cell
        )
        swapped = (self._random_sides() > 0).long()
        self.left_object = torch.where(at_fixation, swapped, self.left_object)

        at_left = active & self.objects_visible & (self.position == self.left_cell)
        at_right = active & self.objects_visible & (self.position == self.right_cell)
        chosen = at_left | at_right
        chosen_object = torch.where(at_left, self.left_object, 1 - self.left_object)
        correct = chosen & (chosen_object == 0)
        choice_reward = torch.where(correct, cfg.correct_reward, cfg.wrong_reward)
        reward = reward + chosen * choice_reward
        self.objects_visible = self.objects_visible & ~chosen
        self.showing_choice = chosen
        self.chosen_object = torch.where(chosen, chosen_object, self.chosen_object)
        next_fixation = (self.position + self._random_sides() * cfg.object_offset) % length
        self.fixation = torch.where(chosen, next_fixation, self.fixation)
        self.fixation_visible = self.fixation_visible | chosen

        slot = self.presentations.clamp(max=cfg.trials - 1)
        current = self.choices[self._batch, slot]
        self.choices[self._batch, slot] = torch.where(chosen, correct.float(), current)
        self.presentations = self.presentations + chosen.long()
        self.steps = self.steps + active.long()
        self.total_reward = self.total_reward + reward
        terminated = active & (self.presentations >= cfg.trials)
        truncated = active & ~terminated & (self.steps >= cfg.max_steps)
        self.done = self.done | terminated | truncated
        return self._observe(), reward, terminated, truncated, {}

    def _observe(self) -> torch.Tensor:
        """Render the visible cells: ``(batch, view, 1 + object_dim)``."""
        cells = (self.position.unsqueeze(1) + self._offsets) % self.config.line_length
        show_fixation = (self.fixation_visible & ~self.showing_choice).unsqueeze(1)
        fixation = ((cells == self.fixation.unsqueeze(1)) & show_fixation).float()
        left_vector = self.objects[self._batch, self.left_object]
        right_vector = self.objects[self._batch, 1 - self.left_object]
        visible = self.objects_visible.unsqueeze(1)
        at_left = ((cells == self.left_cell.unsqueeze(1)) & visible).float().unsqueeze(-1)
        at_right = ((cells == self.right_cell.unsqueeze(1)) & visible).float().unsqueeze(-1)
        objects = at_left * left_vector.unsqueeze(1) + at_right * right_vector.unsqueeze(1)
        centre = torch.zeros_like(cells, dtype=torch.float)
        centre[:, self.config.view // 2] = 1.0
        shown = self.objects[self._batch, self.chosen_object] * self.showing_choice.unsqueeze(-1)
        objects = objects + centre.unsqueeze(-1) * shown.unsqueeze(1)
        return torch.cat([fixation.unsqueeze(-1), objects], dim=-1)

    def lifetime_metrics(self) -> dict[str, torch.Tensor]:
        """Per-task reward, and choice accuracy first / later / per presentation (NaN: none)."""
        later = self.choices[:, 1:]
        return {
            "episode_reward": self.total_reward,
            "accuracy_first": self.choices[:, 0],
            "accuracy_later": later.nanmean(dim=1),
            "accuracy_by_presentation": self.choices,
            "presentations": self.presentations.float(),
        }
