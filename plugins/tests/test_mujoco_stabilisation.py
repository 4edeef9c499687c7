"""The MetODS rule's learning-rate multipliers: coefficients and projection at their own rates."""

from __future__ import annotations

import pytest
import torch
from metods_plugins.plasticity.metods import MetODSRule


def rates(rule: MetODSRule, lr: float) -> dict[str, float]:
    """The Adam rate of each rule parameter, as ``Agent.parameter_groups`` builds them."""
    scales = rule.learning_rate_scales()
    return {name: lr * scales.get(name, 1.0) for name, _ in rule.named_parameters()}


@pytest.mark.parametrize("steps", [1, 3])
def test_coefficients_learn_at_the_scaled_rate(steps: int) -> None:
    """kappa_s and beta_s at lr x scale (x deep_lr_scale for s >= 2); other parameters at lr."""
    config = MetODSRule.Config(recursion_steps=steps, coefficient_lr_scale=0.1, write="linear")
    got = rates(MetODSRule(config, 8), 1.0)
    default = rates(MetODSRule(MetODSRule.Config(recursion_steps=steps, write="linear"), 8), 1.0)
    for name, rate in got.items():
        if name.startswith(("kappa.", "beta.")):
            assert rate == pytest.approx(0.1 * default[name]), name
        else:
            assert rate == default[name] == 1.0, name


def test_scaled_coefficients_move_less_under_adam() -> None:
    """One Adam step through the agent's parameter groups moves kappa_1 ten times less."""
    moved = {}
    for scale in (1.0, 0.1):
        rule = MetODSRule(MetODSRule.Config(recursion_steps=1, coefficient_lr_scale=scale), 4)
        groups = [
            {"params": [p], "lr": 1e-2 * rule.learning_rate_scales().get(name, 1.0)}
            for name, p in rule.named_parameters()
        ]
        optimizer = torch.optim.Adam(groups)
        state = rule.init_state(2)
        x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
        output, _ = rule.step(x, state)
        output.sum().backward()
        before = rule.kappa[0].detach().clone()
        optimizer.step()
        moved[scale] = (rule.kappa[0].detach() - before).abs().max().item()
    assert moved[1.0] > 0 and moved[0.1] == pytest.approx(0.1 * moved[1.0], rel=1e-3)


@pytest.mark.parametrize("write", ["linear", "mlp"])
def test_projection_learns_at_its_own_rate(write: str) -> None:
    """projection_lr_scale scales every parameter of the write's projection P, and nothing else."""
    config = MetODSRule.Config(recursion_steps=1, write=write, projection_lr_scale=0.1)
    got = rates(MetODSRule(config, 8), 1.0)
    assert any(name.startswith("projection.") for name in got)
    for name, rate in got.items():
        assert rate == (0.1 if name.startswith("projection.") else 1.0), name


def test_rate_multipliers_may_change_on_resume() -> None:
    """The rule declares its multipliers resumable, and only them: they change no computation."""
    assert set(MetODSRule.Config.RESUMABLE_FIELDS) == {
        "deep_lr_scale",
        "coefficient_lr_scale",
        "projection_lr_scale",
    }
    assert set(MetODSRule.Config.RESUMABLE_FIELDS) <= set(MetODSRule.Config.model_fields)
