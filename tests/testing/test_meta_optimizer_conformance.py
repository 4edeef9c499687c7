"""The meta-optimizer suite fails a broken optimizer of each kind, naming the broken promise.

Each broken fake below is a working REINFORCE (like ``FakeMetaOptimizer``) with one bug. The
classes live at module level: the suite's tiny trainer and its DDP ranks import them by
``module:Class`` name (the ranks find this folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

import pytest
import torch

from metods_core.agent import Agent
from metods_core.interfaces import OuterBatch
from metods_core.rollout import Lifetimes
from metods_core.testing import (
    META_OPTIMIZER_CHECKS,
    SLOW_META_OPTIMIZER_CHECKS,
    FakeMetaOptimizer,
    check_meta_optimizer,
)
from metods_core.testing._lightning import component_name, run_tiny
from metods_core.testing._meta_optimizer_training import differences


def reinforce_loss(lifetimes: Lifetimes, baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Return REINFORCE's loss with a constant baseline, plus a value loss."""
    mask = lifetimes.alive.float()
    returns = (lifetimes.rewards * mask).flip(0).cumsum(0).flip(0)
    advantages = (returns - baseline).detach()
    value_loss = ((returns - lifetimes.values).pow(2) * mask).mean()
    return -(lifetimes.log_probs * advantages * mask).mean() + 0.5 * value_loss


def metrics(loss: torch.Tensor, lifetimes: Lifetimes) -> dict[str, torch.Tensor]:
    """Return the detached loss and mean lifetime reward."""
    return {"loss": loss.detach(), "reward": lifetimes.rewards.sum(0).mean().detach()}


class HiddenStateMetaOptimizer(FakeMetaOptimizer):
    """Keeps a running reward baseline on itself, which no checkpoint saves."""

    def __init__(self, config: FakeMetaOptimizer.Config) -> None:
        super().__init__(config)
        self.baseline = torch.zeros(())

    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        lifetimes = batch.run_lifetimes(agent)
        loss = reinforce_loss(lifetimes, self.baseline)
        batch.optimizer.zero_grad(set_to_none=True)
        batch.backward(loss)
        batch.optimizer.step()
        self.baseline = 0.5 * self.baseline + 0.5 * lifetimes.rewards.sum(0).mean().detach()
        return metrics(loss, lifetimes)


class MultiStepMetaOptimizer(FakeMetaOptimizer):
    """Takes three optimizer steps per outer step, each on new lifetimes (correct)."""

    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        for _ in range(3):
            lifetimes = batch.run_lifetimes(agent)
            loss = reinforce_loss(lifetimes)
            batch.optimizer.zero_grad(set_to_none=True)
            batch.backward(loss)
            batch.optimizer.step()
        return metrics(loss, lifetimes)


class FrozenMetaOptimizer(FakeMetaOptimizer):
    """Computes gradients but never takes an optimizer step."""

    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        lifetimes = batch.run_lifetimes(agent)
        loss = reinforce_loss(lifetimes)
        batch.optimizer.zero_grad(set_to_none=True)
        batch.backward(loss)
        return metrics(loss, lifetimes)


class DirectBackwardMetaOptimizer(FakeMetaOptimizer):
    """Calls ``loss.backward()`` itself instead of ``OuterBatch.backward``."""

    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        direct = dataclasses.replace(batch, backward=lambda loss: loss.backward())
        return super().training_step(agent, direct)


class GlobalRngMetaOptimizer(FakeMetaOptimizer):
    """Shuffles the lifetimes' weights with the global RNG instead of ``batch.generator``."""

    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        lifetimes = batch.run_lifetimes(agent)
        weights = 1.0 + 0.1 * torch.rand(batch.tasks.size)  # the bug: no generator
        loss = reinforce_loss(lifetimes) * weights.mean()
        batch.optimizer.zero_grad(set_to_none=True)
        batch.backward(loss)
        batch.optimizer.step()
        return metrics(loss, lifetimes)


class AllReducedES(FakeMetaOptimizer):
    """Antithetic evolution strategies: no backward, gradients written by hand (correct).

    Each rank perturbs with its own noise and scores its own tasks, so its estimate is
    rank-local; ``reduce`` averages it over the ranks before the step.
    """

    sigma: ClassVar[float] = 0.1

    uses_gradients: ClassVar[bool] = False

    def reduce(self, batch: OuterBatch, estimate: torch.Tensor) -> torch.Tensor:
        """Return the estimate every rank agrees on: the mean over ranks."""
        return batch.all_reduce(estimate, "mean")

    def fitness(self, agent: Agent, batch: OuterBatch) -> torch.Tensor:
        """Return mean reward, plus a small value term so that 3 tasks never tie exactly."""
        lifetimes = batch.run_lifetimes(agent)
        return lifetimes.rewards.sum(0).mean() + 0.01 * lifetimes.values.mean()

    @torch.no_grad()
    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        parameters = [p for p in agent.parameters() if p.requires_grad]
        centre = [p.clone() for p in parameters]
        noise = [torch.randn(p.shape, generator=batch.generator) for p in parameters]
        scores = []
        for sign in (1.0, -1.0):
            for parameter, mean, epsilon in zip(parameters, centre, noise, strict=True):
                parameter.copy_(mean + sign * self.sigma * epsilon)
            scores.append(self.fitness(agent, batch))
        # Restore exactly: (p + e) - e is not p in floating point, and ranks differ in e.
        for parameter, mean in zip(parameters, centre, strict=True):
            parameter.copy_(mean)
        weight = (scores[0] - scores[1]) / (2 * self.sigma)
        for parameter, epsilon in zip(parameters, noise, strict=True):
            parameter.grad = self.reduce(batch, -weight * epsilon)
        batch.optimizer.step()
        return {"fitness": (scores[0] + scores[1]).detach() / 2}


class RankLocalES(AllReducedES):
    """Writes each rank's own gradient estimate into ``.grad`` without ``batch.all_reduce``."""

    def reduce(self, batch: OuterBatch, estimate: torch.Tensor) -> torch.Tensor:
        return estimate


FAST = {"skip_checks": SLOW_META_OPTIMIZER_CHECKS}


@pytest.mark.parametrize(
    ("cls", "failing"),
    [
        pytest.param(HiddenStateMetaOptimizer, "resume_equals_uninterrupted", id="hidden-state"),
        pytest.param(FrozenMetaOptimizer, "parameters_change", id="never-updates"),
        pytest.param(DirectBackwardMetaOptimizer, "backward_goes_through_step", id="backward"),
        pytest.param(GlobalRngMetaOptimizer, "global_rng_untouched", id="global-rng"),
    ],
)
def test_suite_names_the_broken_check(cls: type[FakeMetaOptimizer], failing: str) -> None:
    """A broken optimizer fails the check of the promise it breaks, and the suite names it."""
    with pytest.raises(AssertionError, match=rf"- {failing}: AssertionError"):
        check_meta_optimizer(cls, **FAST)
    with pytest.raises(AssertionError):
        META_OPTIMIZER_CHECKS[failing](cls)


@pytest.mark.parametrize("cls", [MultiStepMetaOptimizer, AllReducedES, RankLocalES])
def test_correct_single_process_optimizers_pass(cls: type[FakeMetaOptimizer]) -> None:
    """Several optimizer steps per outer step, or hand-made gradients with no backward at all,
    pass every single-process check (the core counts outer steps; ES is gradient-free)."""
    check_meta_optimizer(cls, **FAST)


@pytest.mark.slow
def test_ddp_check_fails_rank_local_gradients_only() -> None:
    """On 2 DDP ranks, hand-made gradients averaged with ``all_reduce`` keep the ranks equal;
    the same without ``all_reduce`` fails ``ddp_ranks_agree``."""
    META_OPTIMIZER_CHECKS["ddp_ranks_agree"](AllReducedES)
    with pytest.raises(AssertionError, match="- ddp_ranks_agree: AssertionError.*differ"):
        check_meta_optimizer(RankLocalES)


class DeclaredGradientFreeButBackward(FakeMetaOptimizer):
    """Declares itself gradient-free but calls ``batch.backward``."""

    uses_gradients: ClassVar[bool] = False


class DeclaredGradientsButNone(AllReducedES):
    """Declares that it uses gradients but never calls ``batch.backward``."""

    uses_gradients: ClassVar[bool] = True


class AutogradGradMetaOptimizer(FakeMetaOptimizer):
    """Computes its gradients with ``torch.autograd.grad`` and writes them into ``.grad``."""

    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        lifetimes = batch.run_lifetimes(agent)
        loss = reinforce_loss(lifetimes)
        parameters = [p for p in agent.parameters() if p.requires_grad]
        gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
        for parameter, gradient in zip(parameters, gradients, strict=True):
            parameter.grad = gradient
        batch.optimizer.step()
        return metrics(loss, lifetimes)


class NoBackwardNoChange(FakeMetaOptimizer):
    """Runs lifetimes and returns metrics, computing and changing nothing."""

    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        lifetimes = batch.run_lifetimes(agent)
        return {"reward": lifetimes.rewards.sum(0).mean().detach()}


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        pytest.param(AllReducedES, None, id="declared-free"),
        pytest.param(DeclaredGradientFreeButBackward, "declares uses_gradients", id="liar"),
        pytest.param(DeclaredGradientsButNone, "never called batch.backward", id="no-backward"),
        pytest.param(NoBackwardNoChange, "never called batch.backward", id="idle"),
        pytest.param(AutogradGradMetaOptimizer, "outside OuterBatch.backward", id="autograd-grad"),
    ],
)
def test_backward_check_needs_backward_or_gradient_free(
    cls: type[FakeMetaOptimizer], message: str | None
) -> None:
    """``backward_goes_through_step`` passes an optimizer that never calls ``batch.backward``
    only if it declares itself gradient-free (``uses_gradients = False``)."""
    check = META_OPTIMIZER_CHECKS["backward_goes_through_step"]
    if message is None:
        check(cls)
    else:
        with pytest.raises(AssertionError, match=message):
            check(cls)


def test_tiny_runs_leave_global_state_alone() -> None:
    """A tiny training run restores the caller's global RNG, thread count and seed variable."""
    torch.manual_seed(123)
    torch.set_num_threads(2)  # the run itself uses 1; the fixture restores the default after
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    seed_variable = os.environ.get("PL_GLOBAL_SEED")
    run = run_tiny(FakeMetaOptimizer, {}, 1)
    assert run.calls == 1 and run.outer_steps == {"last.ckpt": 1}
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    assert os.environ.get("PL_GLOBAL_SEED") == seed_variable


def test_unknown_skipped_check_is_refused() -> None:
    """A typo in ``skip_checks`` is an error, not a silently weaker suite."""
    with pytest.raises(KeyError, match="ddp_rank_agree"):
        check_meta_optimizer(FakeMetaOptimizer, skip_checks=["ddp_rank_agree"])


def test_locally_defined_optimizer_is_named() -> None:
    """An optimizer defined in a function cannot be imported by the trainer: the suite says so."""

    class Local(FakeMetaOptimizer):
        pass

    with pytest.raises(AssertionError, match="module level"):
        component_name(Local)


def test_differences_finds_every_mismatch() -> None:
    """The exact comparison of checkpoints reports each differing path, and nothing else."""
    first: dict[str, Any] = {"a": torch.zeros(2), "b": [1, {"c": torch.ones(1)}], "d": 3}
    second: dict[str, Any] = {"a": torch.zeros(2), "b": [1, {"c": torch.zeros(1)}], "e": 3}
    assert differences(first, second) == ["b[1].c", "d", "e"]
    assert differences(first, first) == []
    assert differences(torch.zeros(2), torch.zeros(2, dtype=torch.float64)) == ["<root>"]
