"""Run every conformance check on every installed plugin, and check that the checks catch bugs.

Plugins are discovered through the registry (entry-point groups ``metods.plasticity``,
``metods.readout``, ``metods.tasks``, ``metods.meta_optimizers``), so a newly installed plugin
is tested without editing this file. Each (plugin, check) pair is its own test id, and the
fakes of ``metods_core.testing`` are checked beside the plugins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import pytest
import torch
from pydantic import BaseModel

from metods_core.interfaces import ComponentConfig, OuterBatch
from metods_core.registry import list_plugins, load_plugin
from metods_core.testing import (
    ACTION_SPACES,
    META_OPTIMIZER_CHECKS,
    PLASTICITY_CHECKS,
    READOUT_CHECKS,
    SLOW_META_OPTIMIZER_CHECKS,
    TASK_CHECKS,
    FakeMetaOptimizer,
    FakeReadout,
    FakeRule,
    FakeTasks,
    check_meta_optimizer,
    check_plasticity_rule,
    check_readout,
    check_task_sampler,
)
from metods_core.testing.fakes import FakeEnv, FakeState

FAKES: dict[str, type] = {
    "plasticity": FakeRule,
    "readout": FakeReadout,
    "task": FakeTasks,
    "meta_optimizer": FakeMetaOptimizer,
}
FAKE = "core-fake"
"""The name the fakes take in test ids."""
CONFIG_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("task", "metaworld_ml1"): {"rollout_steps": 10, "rollouts": 2},
    ("task", "metaworld_ml10"): {"rollout_steps": 10, "rollouts": 2},
}
"""Config values by (kind, name): short Meta-World lifetimes (the default, 10 x 500 steps, makes
each check take 10-30 s; the semantics checked are the same)."""
SPACE_IDS = {0: "discrete3", 1: "box2"}
"""Test-id names of ``ACTION_SPACES``."""


def _names(kind: str) -> list[str]:
    """Return the installed plugins of ``kind`` by name, then the fake."""
    return sorted({info.name for info in list_plugins(kind)}) + [FAKE]


def _load(kind: str, name: str) -> type:
    return FAKES[kind] if name == FAKE else load_plugin(kind, name)


def _cases(
    kind: str, checks: dict[str, Callable[..., None]], slow: frozenset[str] = frozenset()
) -> list[Any]:
    return [
        pytest.param(
            name, check, id=f"{name}-{check}", marks=[pytest.mark.slow] if check in slow else []
        )
        for name in _names(kind)
        for check in checks
    ]


@pytest.mark.parametrize(("name", "check"), _cases("plasticity", PLASTICITY_CHECKS))
def test_plasticity_rule_conforms(name: str, check: str) -> None:
    """Every installed plasticity rule passes every check of ``PLASTICITY_CHECKS``."""
    overrides = CONFIG_OVERRIDES.get(("plasticity", name), {})
    PLASTICITY_CHECKS[check](_load("plasticity", name), **overrides)


def _supported_spaces(name: str) -> list[int]:
    """Return the indices of the ``ACTION_SPACES`` that read-out ``name`` supports.

    A read-out that fails to load is given every space, so that its tests fail with the cause.
    """
    try:
        cls = _load("readout", name)
    except Exception:  # reported by the tests themselves, not at collection
        return list(range(len(ACTION_SPACES)))
    return [index for index, space in enumerate(ACTION_SPACES) if cls.supports(space)]


@pytest.mark.parametrize(
    ("name", "space", "check"),
    [
        pytest.param(name, index, check, id=f"{name}-{SPACE_IDS[index]}-{check}")
        for name in _names("readout")
        for index in _supported_spaces(name)
        for check in READOUT_CHECKS
    ],
)
def test_readout_conforms(name: str, space: int, check: str) -> None:
    """Every installed read-out passes every check of ``READOUT_CHECKS`` in each action space
    it supports (Discrete(3), Box(-1, 1, (2,)))."""
    overrides = CONFIG_OVERRIDES.get(("readout", name), {})
    READOUT_CHECKS[check](_load("readout", name), ACTION_SPACES[space], **overrides)


@pytest.mark.parametrize(("name", "check"), _cases("task", TASK_CHECKS))
def test_task_sampler_conforms(name: str, check: str) -> None:
    """Every installed task sampler passes every check of ``TASK_CHECKS``."""
    TASK_CHECKS[check](_load("task", name), **CONFIG_OVERRIDES.get(("task", name), {}))


@pytest.mark.parametrize(
    ("name", "check"),
    _cases("meta_optimizer", META_OPTIMIZER_CHECKS, SLOW_META_OPTIMIZER_CHECKS),
)
def test_meta_optimizer_conforms(name: str, check: str) -> None:
    """Every installed meta-optimizer passes every check of ``META_OPTIMIZER_CHECKS``."""
    overrides = CONFIG_OVERRIDES.get(("meta_optimizer", name), {})
    META_OPTIMIZER_CHECKS[check](_load("meta_optimizer", name), **overrides)


def test_continuous_fake_task_conforms() -> None:
    """The fake task family also conforms with its Box action space."""
    check_task_sampler(FakeTasks, continuous=True)


# ---- the checks catch what they claim to: deliberately broken components ----


class InPlaceRule(FakeRule):
    """Writes its synapses in place, so the caller's state changes under it."""

    def step(self, x: torch.Tensor, state: FakeState) -> tuple[torch.Tensor, FakeState]:
        y, new = super().step(x, state)
        state.weights.copy_(new.weights.detach())
        return y, new


class LeakyRule(FakeRule):
    """Mixes the tasks of a batch through a batch mean."""

    def step(self, x: torch.Tensor, state: FakeState) -> tuple[torch.Tensor, FakeState]:
        y, new = super().step(x, state)
        return y + y.mean(0), new


class WronglyHeldRule(FakeRule):
    """Claims to hold its state from step 1, but its synapses keep changing: ``step_held``
    reads the state it is given for every step, so it disagrees with ``step``."""

    def held_from(self) -> int | None:
        return 1

    def step_held(self, x: torch.Tensor, state: FakeState) -> tuple[torch.Tensor, FakeState]:
        outputs = torch.stack([self.step(x_t, state)[0] for x_t in x])
        return outputs, state


class UnimplementedHeldRule(FakeRule):
    """Claims to hold its state from step 1 without implementing ``step_held``."""

    def held_from(self) -> int | None:
        return 1


class GlobalRngReadout(FakeReadout):
    """Samples from the global RNG instead of the given generator."""

    def sample(
        self, distribution: torch.distributions.Distribution, generator: torch.Generator
    ) -> torch.Tensor:
        return distribution.sample()


class WrongShapeEnv(FakeEnv):
    """Returns rewards of shape ``(batch, 1)``."""

    def step(self, action: torch.Tensor) -> Any:
        observation, reward, terminated, truncated, info = super().step(action)
        return observation, reward.unsqueeze(-1), terminated, truncated, info


class WrongShapeTasks(FakeTasks):
    """Builds a ``WrongShapeEnv``."""

    def make_env(self, tasks: Any) -> WrongShapeEnv:
        return WrongShapeEnv(self, tasks)


class ConstructorSeededEnv(FakeEnv):
    """Seeds its noise once at construction, so a second reset draws different noise."""

    def __init__(self, sampler: FakeTasks, tasks: Any) -> None:
        super().__init__(sampler, tasks)
        self.generator = torch.Generator().manual_seed(tasks.seed)

    def reset(self) -> Any:
        observation, info = super().reset()
        noise = torch.rand(observation.shape, generator=self.generator) * 0.01
        return (observation + noise).clamp(max=1.0), info


class ConstructorSeededTasks(FakeTasks):
    """Builds a ``ConstructorSeededEnv``."""

    def make_env(self, tasks: Any) -> ConstructorSeededEnv:
        return ConstructorSeededEnv(self, tasks)


class PerEnvNoiseEnv(FakeEnv):
    """Adds reward noise drawn per env index, so tiled copies of a task get different rewards."""

    def reset(self) -> Any:
        self.generator = torch.Generator().manual_seed(self.tasks.seed)
        return super().reset()

    def step(self, action: torch.Tensor) -> Any:
        observation, reward, terminated, truncated, info = super().step(action)
        noise = torch.rand(self.num_envs, generator=self.generator)
        return observation, reward + noise, terminated, truncated, info


class PerEnvNoiseTasks(FakeTasks):
    """Builds a ``PerEnvNoiseEnv``."""

    def make_env(self, tasks: Any) -> PerEnvNoiseEnv:
        return PerEnvNoiseEnv(self, tasks)


class AlwaysLearningTasks(FakeTasks):
    """Counts the training lifetimes it builds as state, and ignores ``freeze_statistics``."""

    learning = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.train_lifetimes = 0

    def make_env(self, tasks: Any) -> FakeEnv:
        self.train_lifetimes += tasks.split == "train" and self.learning
        return super().make_env(tasks)

    def state_dict(self) -> dict[str, Any]:
        return {"train_lifetimes": self.train_lifetimes}


class FreezableTasks(AlwaysLearningTasks):
    """Stops counting once frozen, as a sampler with statistics should."""

    def freeze_statistics(self) -> None:
        self.learning = False


def test_a_sampler_with_state_that_freezes_passes() -> None:
    """The frozen-statistics check passes a stateful sampler that honours the freeze."""
    check_task_sampler(FreezableTasks)


class DirectBackwardMetaOptimizer(FakeMetaOptimizer):
    """Calls ``loss.backward()`` itself instead of ``OuterBatch.backward``."""

    def training_step(self, agent: Any, batch: OuterBatch) -> dict[str, torch.Tensor]:
        direct = dataclasses.replace(batch, backward=lambda loss: loss.backward())
        return super().training_step(agent, direct)


class LaxConfigRule(FakeRule):
    """Its config accepts unknown keys and has an undocumented field."""

    class Config(ComponentConfig, extra="allow"):
        decay: float = 0.9
        rate: float = 0.1


@pytest.mark.parametrize(
    ("run", "failing"),
    [
        pytest.param(lambda: check_plasticity_rule(InPlaceRule), "step_is_pure", id="in-place"),
        pytest.param(lambda: check_plasticity_rule(LeakyRule), "tasks_are_independent", id="leak"),
        pytest.param(lambda: check_plasticity_rule(LaxConfigRule), "config_strict", id="lax"),
        pytest.param(lambda: check_plasticity_rule(WronglyHeldRule), "held_steps", id="held"),
        pytest.param(
            lambda: check_readout(GlobalRngReadout, gym.spaces.Discrete(3)), "sample", id="rng"
        ),
        pytest.param(
            lambda: check_task_sampler(WrongShapeTasks), "env_shapes_and_dtypes", id="shape"
        ),
        pytest.param(
            lambda: check_task_sampler(ConstructorSeededTasks),
            "rebuilt_env_reproduces",
            id="seeded-at-construction",
        ),
        pytest.param(
            lambda: check_task_sampler(PerEnvNoiseTasks),
            "repeated_tasks_share_randomness",
            id="copies-not-shared",
        ),
        pytest.param(
            lambda: check_task_sampler(AlwaysLearningTasks),
            "frozen_statistics",
            id="statistics-not-frozen",
        ),
        pytest.param(
            lambda: check_meta_optimizer(
                DirectBackwardMetaOptimizer, skip_checks=SLOW_META_OPTIMIZER_CHECKS
            ),
            "backward_goes_through_step",
            id="backward",
        ),
    ],
)
def test_suite_reports_a_broken_component(run: Callable[[], None], failing: str) -> None:
    """A suite fails on a component that breaks one of its promises, naming that check."""
    with pytest.raises(AssertionError, match=rf"- {failing}: AssertionError"):
        run()


class InPlaceLeakyRule(InPlaceRule, LeakyRule):
    """Breaks two promises: writes its state in place and mixes tasks."""


def test_suite_reports_every_failure_at_once() -> None:
    """``check_*`` lists every failing check in one error, not only the first."""
    with pytest.raises(AssertionError) as error:
        check_plasticity_rule(InPlaceLeakyRule)
    message = str(error.value)
    assert "failed" in message
    assert "- step_is_pure:" in message and "- tasks_are_independent:" in message


def test_a_held_rule_without_step_held_is_named() -> None:
    """A rule whose ``held_from`` returns a step must implement ``step_held``; the suite says
    so (the default ``step_held`` raises)."""
    with pytest.raises(AssertionError, match=r"- held_steps: NotImplementedError: .*step_held"):
        check_plasticity_rule(UnimplementedHeldRule)


def test_config_without_component_base_is_named() -> None:
    """A plugin whose Config is not a ComponentConfig fails with a message that says so."""

    class PlainRule(FakeRule):
        class Config(BaseModel):
            decay: float = 0.9

    with pytest.raises(AssertionError, match="subclass of metods_core.interfaces.ComponentConfig"):
        PLASTICITY_CHECKS["construction"](PlainRule)


def test_config_overrides_reach_the_component() -> None:
    """Config overrides given to a check are validated into the component's config."""
    with pytest.raises(AssertionError, match="could not be built"):
        check_plasticity_rule(FakeRule, decay=2.0)
    check_plasticity_rule(FakeRule, decay=0.5, rate=0.2)
