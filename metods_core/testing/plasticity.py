"""Conformance suite of ``PlasticityRule`` plugins.

Every check takes the rule's class and optional config overrides (``check(cls, **config)``)
and raises ``AssertionError`` with a message that says what is wrong. ``check_plasticity_rule``
runs them all::

    from metods_core.testing import check_plasticity_rule
    check_plasticity_rule(MyRule, hidden=8)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from metods_core.interfaces import PlasticityRule, State, map_state
from metods_core.testing._common import (
    BATCH,
    CONFIG_CHECKS,
    STEPS,
    build_config,
    gradient_problems,
    run_suite,
    state_leaves,
)

INPUT_SIZE = 6
"""Width of the rule's input in every check."""


def build_rule(cls: type[PlasticityRule], config: dict[str, Any], seed: int = 0) -> PlasticityRule:
    """Build ``cls`` from config overrides after ``torch.manual_seed(seed)``.

    The caller's global RNG state is restored afterwards.
    """
    built = build_config(cls, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rule = cls(built, INPUT_SIZE)  # type: ignore[call-arg]
    assert isinstance(rule, PlasticityRule), (
        f"{cls.__name__}(config, input_size) built a {type(rule).__name__}, not a PlasticityRule"
    )
    return rule


def _inputs(seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(STEPS, BATCH, INPUT_SIZE, generator=generator).to(dtype)


def _init_state(rule: PlasticityRule, batch_size: int = BATCH, seed: int = 2) -> State:
    # A rule may sample its initial state; draw it from the same stream every time.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return rule.init_state(batch_size)


def _unroll(rule: PlasticityRule, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
    outputs = []
    for x in inputs:
        y, state = rule.step(x, state)
        outputs.append(y)
    return torch.stack(outputs), state


def _same_state(first: State, second: State) -> bool:
    a, b = state_leaves(first), state_leaves(second)
    return len(a) == len(b) and all(
        x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b, strict=True)
    )


def check_construction(cls: type[PlasticityRule], /, **config: Any) -> None:
    """The rule builds as ``cls(cls.Config(**config), input_size)`` and sets ``output_size``."""
    rule = build_rule(cls, config)
    size = getattr(rule, "output_size", None)
    assert isinstance(size, int) and size > 0, (
        f"{cls.__name__}.output_size must be a positive int after construction, got {size!r}"
    )


def check_shapes_and_dtypes(cls: type[PlasticityRule], /, **config: Any) -> None:
    """The state is batched in dim 0; ``step`` returns ``(batch, output_size)`` float32, finite."""
    rule = build_rule(cls, config)
    state = _init_state(rule)
    initial = state_leaves(state)
    for leaf in initial:
        assert leaf.shape[:1] == (BATCH,), (
            f"init_state({BATCH}) gave a state leaf of shape {tuple(leaf.shape)}: "
            "every leaf must be batched over tasks in dim 0"
        )
        if leaf.is_floating_point():
            assert leaf.dtype == torch.float32, f"state leaf dtype {leaf.dtype}, expected float32"
    for t, x in enumerate(_inputs()):
        y, state = rule.step(x, state)
        assert isinstance(y, torch.Tensor), f"step returned {type(y).__name__} as its output"
        assert y.shape == (BATCH, rule.output_size), (
            f"step {t}: output shape {tuple(y.shape)}, expected (batch, output_size) = "
            f"{(BATCH, rule.output_size)}"
        )
        assert y.dtype == torch.float32, f"step {t}: output dtype {y.dtype}, expected float32"
        assert torch.isfinite(y).all(), f"step {t}: non-finite output"
        leaves = state_leaves(state)
        assert [leaf.shape for leaf in leaves] == [leaf.shape for leaf in initial], (
            f"step {t}: state leaf shapes changed from {[tuple(v.shape) for v in initial]} "
            f"to {[tuple(v.shape) for v in leaves]}"
        )
        assert all(torch.isfinite(leaf).all() for leaf in leaves if leaf.is_floating_point()), (
            f"step {t}: non-finite state"
        )


def check_step_is_pure(cls: type[PlasticityRule], /, **config: Any) -> None:
    """``step`` neither mutates its input state nor keeps hidden memory: same in, same out."""
    rule = build_rule(cls, config)
    inputs = _inputs()
    _, state = _unroll(rule, inputs[:-1], _init_state(rule))
    snapshot = map_state(lambda leaf: leaf.detach().clone(), state)
    y_first, state_first = rule.step(inputs[-1], state)
    assert _same_state(state, snapshot), (
        "step modified its input state in place; return a new state instead"
    )
    y_second, state_second = rule.step(inputs[-1], state)
    assert torch.equal(y_first, y_second) and _same_state(state_first, state_second), (
        "two calls of step with the same input and state gave different results: the rule "
        "keeps memory outside its state (a module buffer or attribute) or is random"
    )


def check_tasks_are_independent(cls: type[PlasticityRule], /, **config: Any) -> None:
    """Changing one task's input leaves every other task's output and state unchanged."""
    rule = build_rule(cls, config)
    inputs = _inputs()
    perturbed = inputs.clone()
    perturbed[:, 0] += 1.0
    with torch.no_grad():
        y, state = _unroll(rule, inputs, _init_state(rule))
        y_perturbed, state_perturbed = _unroll(rule, perturbed, _init_state(rule))
    torch.testing.assert_close(
        y_perturbed[:, 1:],
        y[:, 1:],
        msg=lambda m: f"task 0's input changed the other tasks' outputs: {m}",
    )
    for leaf, leaf_perturbed in zip(
        state_leaves(state), state_leaves(state_perturbed), strict=True
    ):
        torch.testing.assert_close(
            leaf_perturbed[1:],
            leaf[1:],
            msg=lambda m: f"task 0's input changed the other tasks' state: {m}",
        )


def check_state_reset(cls: type[PlasticityRule], /, **config: Any) -> None:
    """``reset(state, mask)`` re-initialises exactly the tasks that ``mask`` selects."""
    rule = build_rule(cls, config)
    fresh = _init_state(rule)
    with torch.no_grad():
        _, state = _unroll(rule, _inputs(), fresh)
    mask = torch.tensor([True, False, True])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)  # the stream of ``_init_state``, for rules that sample W_0
        reset = rule.reset(state, mask)
    fresh_leaves, old_leaves = state_leaves(fresh), state_leaves(state)
    reset_leaves = state_leaves(reset)
    assert len(reset_leaves) == len(old_leaves), (
        f"reset changed the state's structure: {len(old_leaves)} leaves -> {len(reset_leaves)}"
    )
    for i, (new, init, old) in enumerate(zip(reset_leaves, fresh_leaves, old_leaves, strict=True)):
        assert new.shape == old.shape, f"reset changed leaf {i}'s shape"
        assert torch.equal(new[mask], init[mask].to(new.dtype)), (
            f"reset: leaf {i} of the masked tasks is not the initial state"
        )
        assert torch.equal(new[~mask], old[~mask]), f"reset: leaf {i} of the unmasked tasks changed"
    kept = rule.reset(state, torch.zeros(BATCH, dtype=torch.bool))
    assert _same_state(kept, state), "reset with an all-False mask changed the state"


def check_gradients(cls: type[PlasticityRule], /, **config: Any) -> None:
    """A loss on the outputs of a few steps gives every trainable parameter and the input a
    finite, non-zero gradient (backprop through time reaches every meta-parameter).

    The check runs at a slightly perturbed point: a rule may start exactly at a saddle on
    purpose (a zero-initialised gate silences the gradient of what it gates, as in ReZero), and
    the property checked is that the graph connects every parameter, not the initial value.
    """
    rule = build_rule(cls, config)
    noise = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for parameter in rule.parameters():
            if parameter.requires_grad and parameter.is_floating_point():
                parameter.add_(1e-2 * torch.randn(parameter.shape, generator=noise).to(parameter))
    inputs = _inputs().requires_grad_(True)
    outputs, _ = _unroll(rule, inputs, _init_state(rule))
    weights = torch.randn(outputs.shape, generator=torch.Generator().manual_seed(3))
    (outputs * weights).sum().backward()
    problems = gradient_problems(rule)
    assert not problems, "gradients after a loss on the outputs:\n  " + "\n  ".join(problems)
    assert inputs.grad is not None and inputs.grad.abs().sum() > 0, (
        "no gradient reaches the rule's input, so the encoder cannot learn"
    )


def check_determinism(cls: type[PlasticityRule], /, **config: Any) -> None:
    """The same seed before construction and the same inputs give the same outputs."""
    runs = []
    for _ in range(2):
        rule = build_rule(cls, config, seed=0)
        with torch.no_grad():
            runs.append(_unroll(rule, _inputs(), _init_state(rule)))
    (y_first, state_first), (y_second, state_second) = runs
    assert torch.equal(y_first, y_second) and _same_state(state_first, state_second), (
        "two rules built after the same torch.manual_seed gave different outputs"
    )


def check_follows_module_dtype(cls: type[PlasticityRule], /, **config: Any) -> None:
    """After ``rule.to(torch.float64)`` the state and outputs are float64 (no hard-coded dtype)."""
    rule = build_rule(cls, config).to(torch.float64)
    state = _init_state(rule)
    for leaf in state_leaves(state):
        if leaf.is_floating_point():
            assert leaf.dtype == torch.float64, (
                f"init_state of a float64 rule gave a {leaf.dtype} leaf: create the state with "
                "the dtype of the rule's parameters"
            )
    y, state = _unroll(rule, _inputs(dtype=torch.float64), state)
    assert y.dtype == torch.float64, f"a float64 rule returned {y.dtype} outputs"


def check_held_steps(cls: type[PlasticityRule], /, **config: Any) -> None:
    """A rule that holds its state from step K (``held_from()``) gives, from ``step_held`` on
    the steps after K, the outputs, state and gradients of ``step`` called on each in turn."""
    rule = build_rule(cls, config)
    held_from = rule.held_from()
    if held_from is None:
        return
    inputs = _inputs()
    assert 0 <= held_from < STEPS, (
        f"check with a held_from() below {STEPS} (the check's steps), got {held_from}"
    )
    results = []
    for held in (False, True):
        rule.zero_grad(set_to_none=True)
        _, state = _unroll(rule, inputs[:held_from], _init_state(rule))
        rest = inputs[held_from:]
        outputs, state = rule.step_held(rest, state) if held else _unroll(rule, rest, state)
        weights = torch.randn(outputs.shape, generator=torch.Generator().manual_seed(3))
        (outputs * weights).sum().backward()
        grads = [p.grad.clone() for p in rule.parameters() if p.grad is not None]
        results.append((outputs.detach(), map_state(torch.Tensor.detach, state), grads))
    (y_step, state_step, grads_step), (y_held, state_held, grads_held) = results
    assert y_held.shape == y_step.shape, (
        f"step_held returned outputs of shape {tuple(y_held.shape)}, expected (steps, batch, "
        f"output_size) = {tuple(y_step.shape)}"
    )
    torch.testing.assert_close(
        y_held, y_step, msg=lambda m: f"step_held's outputs differ from step's: {m}"
    )
    for leaf_held, leaf_step in zip(
        state_leaves(state_held), state_leaves(state_step), strict=True
    ):
        torch.testing.assert_close(
            leaf_held, leaf_step, msg=lambda m: f"step_held's state differs from step's: {m}"
        )
    assert len(grads_held) == len(grads_step), "step_held reaches other parameters than step"
    for got, expected in zip(grads_held, grads_step, strict=True):
        torch.testing.assert_close(
            got, expected, msg=lambda m: f"step_held's gradients differ from step's: {m}"
        )


PLASTICITY_CHECKS: dict[str, Callable[..., None]] = {
    **CONFIG_CHECKS,
    "construction": check_construction,
    "shapes_and_dtypes": check_shapes_and_dtypes,
    "step_is_pure": check_step_is_pure,
    "tasks_are_independent": check_tasks_are_independent,
    "state_reset": check_state_reset,
    "gradients": check_gradients,
    "determinism": check_determinism,
    "follows_module_dtype": check_follows_module_dtype,
    "held_steps": check_held_steps,
}
"""Every check of the plasticity suite, by name: ``check(cls, **config)``."""


def check_plasticity_rule(cls: type[PlasticityRule], /, **config: Any) -> None:
    """Run every check of ``PLASTICITY_CHECKS`` on ``cls``; raise one report of all failures.

    Args:
        cls: the rule's class.
        **config: overrides of ``cls.Config``'s defaults.

    Raises:
        AssertionError: one or more checks failed; the message lists each.
    """
    run_suite(f"plasticity rule {cls.__name__}", PLASTICITY_CHECKS, cls, **config)
