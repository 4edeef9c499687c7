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
from typing import Any, NamedTuple

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
        self._transition: Any = transition

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
        return HarlowEnv(
            self.config, tasks, self.observation_space, self.action_space, self._transition
        )

    def compile_env_step(self) -> None:
        """Compile the envs' transition (about 60 small operators per step become one call)."""
        self._transition = torch.compile(transition, dynamic=False)


class HarlowState(NamedTuple):
    """Everything that changes during a batch of Harlow episodes; each ``(batch,)`` unless said."""

    position: torch.Tensor
    """The agent's cell."""
    fixation: torch.Tensor
    """The fixation cross's cell."""
    fixation_visible: torch.Tensor
    """Whether the cross is shown (bool)."""
    objects_visible: torch.Tensor
    """Whether the two objects are shown (bool)."""
    left_cell: torch.Tensor
    """Cell of the left object of the current presentation."""
    right_cell: torch.Tensor
    """Cell of the right object."""
    left_object: torch.Tensor
    """Index into the episode's objects of the object on the left."""
    showing_choice: torch.Tensor
    """Whether this step shows the object just chosen under the agent (bool)."""
    chosen_object: torch.Tensor
    """Index of the last object chosen."""
    presentations: torch.Tensor
    """Presentations done."""
    steps: torch.Tensor
    """Steps taken."""
    done: torch.Tensor
    """Whether the episode ended (bool)."""
    total_reward: torch.Tensor
    """Reward summed over the episode."""
    choices: torch.Tensor
    """``(batch, trials)``: 1 correct, 0 wrong, NaN not yet made."""


@dataclass(frozen=True)
class HarlowRules:
    """The task's constants, as plain numbers (what a compiled transition specialises on)."""

    line_length: int
    view: int
    object_offset: int
    trials: int
    max_steps: int
    fixation_reward: float
    correct_reward: float
    wrong_reward: float


class HarlowEnv(BatchedEnv):
    """A batch of Harlow episodes stepped together; finished episodes stay frozen."""

    def __init__(
        self,
        config: HarlowTasks.Config,
        tasks: HarlowTaskBatch,
        observation_space: gym.Space,
        action_space: gym.Space,
        step_function: Any = None,
    ) -> None:
        self.config = config
        self.rules = HarlowRules(
            line_length=config.line_length,
            view=config.view,
            object_offset=config.object_offset,
            trials=config.trials,
            max_steps=config.max_steps,
            fixation_reward=config.fixation_reward,
            correct_reward=config.correct_reward,
            wrong_reward=config.wrong_reward,
        )
        self.objects = tasks.objects
        self.device = tasks.objects.device
        self.num_envs = tasks.size
        self.lifetime_steps = config.max_steps
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.seed = tasks.seed
        self.copies = tasks.copies
        self.generator = torch.Generator(device=self.device)
        self._transition = step_function or transition
        self._moves = torch.tensor([0, -1, 1], device=self.device)  # STAY, LEFT, RIGHT

    def _random_sides(self, draws: int) -> torch.Tensor:
        """Return ``(draws, batch)`` of -1 or +1, uniformly; drawn for the base tasks and tiled
        over the batch's ``copies`` (common random numbers; one draw per env when ``copies`` is
        1)."""
        base = self.num_envs // self.copies
        bits = torch.rand(draws, base, generator=self.generator, device=self.device) < 0.5
        return (bits.long() * 2 - 1).repeat(1, self.copies)

    def reset(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """Place every agent at cell 0 with a fixation cross at a random side.

        All the lifetime's random sides are drawn here, from the tasks' seed: one for the first
        cross, then two per step (the objects' sides, the next cross's side).
        """
        n, device = self.num_envs, self.device
        self.generator.manual_seed(self.seed)
        self._sides = self._random_sides(1 + 2 * self.lifetime_steps)
        self._t = 0
        zeros = torch.zeros(n, dtype=torch.long, device=device)
        self.state = HarlowState(
            position=zeros,
            fixation=(self._sides[0] * self.config.object_offset) % self.config.line_length,
            fixation_visible=torch.ones(n, dtype=torch.bool, device=device),
            objects_visible=torch.zeros(n, dtype=torch.bool, device=device),
            left_cell=zeros,
            right_cell=zeros,
            left_object=zeros,
            showing_choice=torch.zeros(n, dtype=torch.bool, device=device),
            chosen_object=zeros,
            presentations=zeros,
            steps=zeros,
            done=torch.zeros(n, dtype=torch.bool, device=device),
            total_reward=torch.zeros(n, device=device),
            choices=torch.full((n, self.config.trials), float("nan"), device=device),
        )
        return observe(self.rules, self.state, self.objects), {}

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Move every running agent and apply the task's rules; see the module docstring."""
        t = min(self._t, self.lifetime_steps - 1)  # past the lifetime every episode is done
        sides = self._sides[1 + 2 * t : 3 + 2 * t]
        self._t += 1
        self.state, observation, reward, terminated, truncated = self._transition(
            self.rules, self.state, self.objects, self._moves, action, sides
        )
        return observation, reward, terminated, truncated, {}

    def lifetime_metrics(self) -> dict[str, torch.Tensor]:
        """Per-task reward, and choice accuracy first / later / per presentation (NaN: none)."""
        choices = self.state.choices
        later = choices[:, 1:]
        return {
            "episode_reward": self.state.total_reward,
            "accuracy_first": choices[:, 0],
            "accuracy_later": later.nanmean(dim=1),
            "accuracy_by_presentation": choices,
            "presentations": self.state.presentations.float(),
        }


def transition(
    rules: HarlowRules,
    state: HarlowState,
    objects: torch.Tensor,
    moves: torch.Tensor,
    action: torch.Tensor,
    sides: torch.Tensor,
) -> tuple[HarlowState, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of every episode: a pure function of tensors (compilable).

    Args:
        rules: the task's constants.
        state: the episodes' state.
        objects: ``(batch, 2, object_dim)``, object 0 rewarded.
        moves: ``(3,)``, the cell offset of stay, left and right.
        action: ``(batch,)`` in {stay, left, right}.
        sides: ``(2, batch)`` of -1/+1: the objects' sides if a cross is reached, the next
            cross's side if an object is chosen.

    Returns:
        The new state, the observation ``(batch, view, 1 + object_dim)``, the reward, and
        ``terminated`` / ``truncated`` ``(batch,)`` (set only at the step an episode ends).
    """
    active = ~state.done
    length = rules.line_length
    position = (state.position + moves[action] * active) % length

    at_fixation = active & state.fixation_visible & (position == state.fixation)
    reward = at_fixation * rules.fixation_reward
    fixation_visible = state.fixation_visible & ~at_fixation
    objects_visible = state.objects_visible | at_fixation
    left_cell = torch.where(at_fixation, (position - rules.object_offset) % length, state.left_cell)
    right_cell = torch.where(
        at_fixation, (position + rules.object_offset) % length, state.right_cell
    )
    left_object = torch.where(at_fixation, (sides[0] > 0).long(), state.left_object)

    at_left = active & objects_visible & (position == left_cell)
    at_right = active & objects_visible & (position == right_cell)
    chosen = at_left | at_right
    chosen_object = torch.where(at_left, left_object, 1 - left_object)
    correct = chosen & (chosen_object == 0)
    choice_reward = torch.where(correct, rules.correct_reward, rules.wrong_reward)
    reward = reward + chosen * choice_reward
    objects_visible = objects_visible & ~chosen
    next_fixation = (position + sides[1] * rules.object_offset) % length
    fixation = torch.where(chosen, next_fixation, state.fixation)
    fixation_visible = fixation_visible | chosen

    slot = state.presentations.clamp(max=rules.trials - 1).unsqueeze(1)
    current = state.choices.gather(1, slot)
    made = torch.where(chosen.unsqueeze(1), correct.unsqueeze(1).float(), current)
    choices = state.choices.scatter(1, slot, made)
    presentations = state.presentations + chosen.long()
    steps = state.steps + active.long()
    terminated = active & (presentations >= rules.trials)
    truncated = active & ~terminated & (steps >= rules.max_steps)
    new_state = HarlowState(
        position=position,
        fixation=fixation,
        fixation_visible=fixation_visible,
        objects_visible=objects_visible,
        left_cell=left_cell,
        right_cell=right_cell,
        left_object=left_object,
        showing_choice=chosen,
        chosen_object=torch.where(chosen, chosen_object, state.chosen_object),
        presentations=presentations,
        steps=steps,
        done=state.done | terminated | truncated,
        total_reward=state.total_reward + reward,
        choices=choices,
    )
    return new_state, observe(rules, new_state, objects), reward, terminated, truncated


def observe(rules: HarlowRules, state: HarlowState, objects: torch.Tensor) -> torch.Tensor:
    """Render the visible cells: ``(batch, view, 1 + object_dim)``."""
    half = rules.view // 2
    offsets = torch.arange(-half, half + 1, device=state.position.device)
    cells = (state.position.unsqueeze(1) + offsets) % rules.line_length
    show_fixation = (state.fixation_visible & ~state.showing_choice).unsqueeze(1)
    fixation = ((cells == state.fixation.unsqueeze(1)) & show_fixation).float()
    batch = torch.arange(objects.shape[0], device=objects.device)
    left_vector = objects[batch, state.left_object]
    right_vector = objects[batch, 1 - state.left_object]
    visible = state.objects_visible.unsqueeze(1)
    at_left = ((cells == state.left_cell.unsqueeze(1)) & visible).float().unsqueeze(-1)
    at_right = ((cells == state.right_cell.unsqueeze(1)) & visible).float().unsqueeze(-1)
    shown_objects = at_left * left_vector.unsqueeze(1) + at_right * right_vector.unsqueeze(1)
    centre = (offsets == 0).float()  # the agent's own cell
    shown = objects[batch, state.chosen_object] * state.showing_choice.unsqueeze(-1)
    shown_objects = shown_objects + centre[None, :, None] * shown.unsqueeze(1)
    return torch.cat([fixation.unsqueeze(-1), shown_objects], dim=-1)
