"""Conformance suite of ``MetaOptimizer`` plugins.

The checks train a tiny agent built from the fakes of ``metods_core.testing.fakes`` (a Hebbian
rule, linear heads, a find-the-target task), so they need no other plugin. Every check takes
the meta-optimizer's class and optional config overrides (``check(cls, **config)``) and raises
``AssertionError`` with a message that says what is wrong.

Two kinds of checks: quick ones that call ``training_step`` by hand on an ``OuterBatch``
(metrics, gradients through ``batch.backward``, determinism, the global RNG), and ones that
train inside a tiny real Lightning trainer (``_meta_optimizer_training``): the outer-step
count, parameters that change, stop-and-resume, 2-process CPU DDP. ``check_meta_optimizer``
runs them all::

    from metods_core.testing import SLOW_META_OPTIMIZER_CHECKS, check_meta_optimizer
    check_meta_optimizer(MyPPO, epochs=1)
    check_meta_optimizer(MyPPO, skip_checks=SLOW_META_OPTIMIZER_CHECKS, epochs=1)  # no DDP
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import torch

from metods_core.agent import Agent
from metods_core.interfaces import MetaOptimizer, OuterBatch, TaskSampler
from metods_core.testing._common import BATCH, CONFIG_CHECKS, build_config, run_suite
from metods_core.testing._meta_optimizer_training import (
    check_ddp_ranks_agree,
    check_outer_steps_match_max_steps,
    check_parameters_change,
    check_resume_equals_uninterrupted,
)
from metods_core.testing.fakes import create_tiny_agent


def build_meta_optimizer(cls: type[MetaOptimizer], config: dict[str, Any]) -> MetaOptimizer:
    """Build ``cls`` from config overrides."""
    built = build_config(cls, config)
    meta_optimizer = cls(built)  # type: ignore[call-arg]
    assert isinstance(meta_optimizer, MetaOptimizer), (
        f"{cls.__name__}(config) built a {type(meta_optimizer).__name__}, not a MetaOptimizer"
    )
    return meta_optimizer


def _setup(
    cls: type[MetaOptimizer], config: dict[str, Any], seed: int = 0
) -> tuple[MetaOptimizer, Agent, torch.optim.Optimizer, TaskSampler]:
    """Return the meta-optimizer, a tiny agent, its optimizer and its task sampler."""
    meta_optimizer = build_meta_optimizer(cls, config)
    agent, sampler = create_tiny_agent(seed=seed)
    optimizer = meta_optimizer.configure_optimizer(agent)
    return meta_optimizer, agent, optimizer, sampler


def outer_batch(
    sampler: TaskSampler,
    optimizer: torch.optim.Optimizer,
    step: int,
    backward: Callable[[torch.Tensor], None] | None = None,
) -> OuterBatch:
    """Return the outer batch of step ``step``, seeded from it, outside any trainer."""
    tasks = sampler.sample(BATCH, "train", torch.Generator().manual_seed(1000 + step))
    return OuterBatch(
        tasks=tasks,
        build_env=sampler.make_env,
        optimizer=optimizer,
        backward=backward or (lambda loss: loss.backward()),
        generator=torch.Generator().manual_seed(step),
        step=step,
    )


def check_construction(cls: type[MetaOptimizer], /, **config: Any) -> None:
    """The meta-optimizer builds as ``cls(cls.Config(**config))``."""
    build_meta_optimizer(cls, config)


def check_configure_optimizer(cls: type[MetaOptimizer], /, **config: Any) -> None:
    """``configure_optimizer`` returns a torch optimizer over some of the agent's parameters."""
    meta_optimizer = build_meta_optimizer(cls, config)
    agent, _ = create_tiny_agent()
    optimizer = meta_optimizer.configure_optimizer(agent)
    assert isinstance(optimizer, torch.optim.Optimizer), (
        f"configure_optimizer returned {type(optimizer).__name__}, not a torch.optim.Optimizer"
    )
    own = {id(parameter) for parameter in agent.parameters()}
    optimized = [p for group in optimizer.param_groups for p in group["params"]]
    assert optimized, "the optimizer has no parameters"
    assert all(id(parameter) in own for parameter in optimized), (
        "the optimizer holds tensors that are not parameters of the agent"
    )


def check_training_step(cls: type[MetaOptimizer], /, **config: Any) -> None:
    """Two outer steps return metrics that are finite, detached 0-dim tensors, and keep the
    meta-parameters finite."""
    meta_optimizer, agent, optimizer, sampler = _setup(cls, config)
    for outer in range(2):
        metrics = meta_optimizer.training_step(agent, outer_batch(sampler, optimizer, outer))
        assert isinstance(metrics, dict) and metrics, (
            f"outer step {outer}: training_step returned {metrics!r}, not a dict of metrics"
        )
        for name, value in metrics.items():
            assert isinstance(name, str), f"metric name {name!r} is not a string"
            assert isinstance(value, torch.Tensor) and value.dim() == 0, (
                f"metric {name!r} must be a 0-dim tensor, got {value!r}"
            )
            assert not value.requires_grad, (
                f"metric {name!r} is attached to the autograd graph: return value.detach()"
            )
            assert torch.isfinite(value), f"outer step {outer}: metric {name!r} is {value.item()}"
    assert all(torch.isfinite(parameter).all() for parameter in agent.parameters()), (
        "the meta-parameters became non-finite"
    )


def check_backward_goes_through_step(cls: type[MetaOptimizer], /, **config: Any) -> None:
    """Gradients are computed through ``OuterBatch.backward``, never by ``loss.backward()`` or
    ``torch.autograd.grad`` directly (Lightning's precision plugins and DDP gradient sync hook
    into it), and reach the meta-parameters.

    An optimizer that never calls ``batch.backward`` passes only as a gradient-free one, which
    declares ``uses_gradients = False`` (and then must not call it).
    """
    meta_optimizer, agent, optimizer, sampler = _setup(cls, config)
    inside = [False]
    calls = [0]
    outside: list[str] = []
    reached: list[str] = []

    def backward(loss: torch.Tensor) -> None:
        calls[0] += 1
        inside[0] = True
        try:
            loss.backward()
        finally:
            inside[0] = False

    def watch(name: str) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            (reached if inside[0] else outside).append(name)

        return hook

    handles = [
        parameter.register_hook(watch(name))
        for name, parameter in agent.named_parameters()
        if parameter.requires_grad
    ]
    try:
        meta_optimizer.training_step(agent, outer_batch(sampler, optimizer, 0, backward))
    finally:
        for handle in handles:
            handle.remove()
    assert not outside, (
        f"gradients of {sorted(set(outside))} were computed outside OuterBatch.backward: call "
        "batch.backward(loss) instead of loss.backward() or torch.autograd.grad"
    )
    if not cls.uses_gradients:
        assert calls[0] == 0, (
            f"{cls.__name__} declares uses_gradients = False but called batch.backward"
        )
        return
    assert calls[0] > 0, (
        "training_step never called batch.backward: a gradient-based optimizer computes its "
        "gradients with batch.backward(loss); a gradient-free one declares "
        "uses_gradients = False"
    )
    assert reached, (
        "batch.backward was called but no gradient reached any meta-parameter: the loss "
        "does not depend on the agent's parameters"
    )


def check_determinism(cls: type[MetaOptimizer], /, **config: Any) -> None:
    """The same seeds give the same metrics and the same updated meta-parameters."""
    runs = []
    for _ in range(2):
        meta_optimizer, agent, optimizer, sampler = _setup(cls, config)
        metrics = meta_optimizer.training_step(agent, outer_batch(sampler, optimizer, 0))
        runs.append((metrics, [parameter.detach().clone() for parameter in agent.parameters()]))
    (metrics_a, params_a), (metrics_b, params_b) = runs
    assert metrics_a.keys() == metrics_b.keys(), "the same seeds gave different metric names"
    different = [name for name in metrics_a if not torch.equal(metrics_a[name], metrics_b[name])]
    assert not different, f"the same seeds gave different metrics: {different}"
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True)), (
        "the same seeds gave different meta-parameters after one training step"
    )


def check_global_rng_untouched(cls: type[MetaOptimizer], /, **config: Any) -> None:
    """``training_step`` draws its randomness from ``OuterBatch.generator``, not the global RNG."""
    meta_optimizer, agent, optimizer, sampler = _setup(cls, config)
    batch = outer_batch(sampler, optimizer, 0)
    state = torch.get_rng_state()
    meta_optimizer.training_step(agent, batch)
    assert torch.equal(torch.get_rng_state(), state), (
        "training_step drew from torch's global RNG: use OuterBatch.generator"
    )


META_OPTIMIZER_CHECKS: dict[str, Callable[..., None]] = {
    **CONFIG_CHECKS,
    "construction": check_construction,
    "configure_optimizer": check_configure_optimizer,
    "training_step": check_training_step,
    "backward_goes_through_step": check_backward_goes_through_step,
    "determinism": check_determinism,
    "global_rng_untouched": check_global_rng_untouched,
    "outer_steps_match_max_steps": check_outer_steps_match_max_steps,
    "parameters_change": check_parameters_change,
    "resume_equals_uninterrupted": check_resume_equals_uninterrupted,
    "ddp_ranks_agree": check_ddp_ranks_agree,
}
"""Every check of the meta-optimizer suite, by name: ``check(cls, **config)``."""

SLOW_META_OPTIMIZER_CHECKS: frozenset[str] = frozenset({"ddp_ranks_agree"})
"""Checks that start processes (about 10 s each): skip them by name for a fast run, and mark
tests running them ``slow``."""


def check_meta_optimizer(
    cls: type[MetaOptimizer], /, *, skip_checks: Collection[str] = (), **config: Any
) -> None:
    """Run every check of ``META_OPTIMIZER_CHECKS`` on ``cls``; raise one report of all failures.

    Args:
        cls: the meta-optimizer's class, defined at module level (the tiny trainer and the
            DDP ranks import it by ``module:Class`` name).
        skip_checks: names of checks not to run, e.g. ``SLOW_META_OPTIMIZER_CHECKS``.
        **config: overrides of ``cls.Config``'s defaults.

    Raises:
        AssertionError: one or more checks failed; the message lists each.
        KeyError: ``skip_checks`` names a check that does not exist.
    """
    unknown = sorted(set(skip_checks) - set(META_OPTIMIZER_CHECKS))
    if unknown:
        raise KeyError(f"no meta-optimizer checks named {unknown}: {list(META_OPTIMIZER_CHECKS)}")
    checks = {name: c for name, c in META_OPTIMIZER_CHECKS.items() if name not in skip_checks}
    run_suite(f"meta-optimizer {cls.__name__}", checks, cls, **config)
