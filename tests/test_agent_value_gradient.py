"""``agent.value_gradient``: the share of the value loss's gradient that reaches the rule and the
encoder; the forward pass and the policy's gradient do not change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metods_core.components import create_agent, create_task_sampler
from metods_core.recipe import RecipeError, load_recipe
from metods_core.rollout import run_lifetimes

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "harlow" / "metods.yaml"
TRUNK = ("encoder", "rule")


def _value_and_policy_gradients(share: float) -> tuple[torch.Tensor, dict, dict]:
    """Run 4 Harlow lifetimes of 20 steps with an agent of ``value_gradient=share`` (same
    initial parameters for every share); return the values ``(4, 20)`` and the gradients of
    the summed values and of the summed log-probabilities, by parameter name."""
    recipe = load_recipe(
        RECIPE, ["trainer.compile=false", "task.max_steps=20", f"agent.value_gradient={share}"]
    )
    sampler = create_task_sampler(recipe)
    torch.manual_seed(0)
    agent = create_agent(recipe, sampler)
    tasks = sampler.sample(4, "train", torch.Generator().manual_seed(0))
    lifetimes = run_lifetimes(agent, sampler.make_env(tasks), torch.Generator().manual_seed(1))
    names, parameters = zip(*agent.named_parameters(), strict=True)

    def gradients(output: torch.Tensor) -> dict[str, torch.Tensor]:
        grads = torch.autograd.grad(output, parameters, retain_graph=True, allow_unused=True)
        return {
            name: torch.zeros_like(p) if g is None else g
            for name, p, g in zip(names, parameters, grads, strict=True)
        }

    value_grads = gradients(lifetimes.values.sum())
    policy_grads = gradients(lifetimes.log_probs.sum())
    return lifetimes.values.detach(), value_grads, policy_grads


def test_value_gradient_scales_only_the_trunk_share_of_the_value_loss() -> None:
    values, full, policy_full = _value_and_policy_gradients(1.0)
    assert sum(g.abs().sum() for n, g in full.items() if n.startswith(TRUNK)) > 0
    for share in (0.5, 0.0):
        scaled_values, scaled, policy_scaled = _value_and_policy_gradients(share)
        torch.testing.assert_close(scaled_values, values)
        for name, gradient in full.items():
            if name.startswith(TRUNK):
                torch.testing.assert_close(scaled[name], share * gradient, msg=name)
            else:  # the read-out's heads learn from the value loss as before
                torch.testing.assert_close(scaled[name], gradient, msg=name)
        for name, gradient in policy_full.items():
            torch.testing.assert_close(policy_scaled[name], gradient, msg=name)


@pytest.mark.parametrize("share", ["-0.1", "1.5"])
def test_value_gradient_outside_zero_to_one_is_a_recipe_error(share: str) -> None:
    with pytest.raises(RecipeError, match="agent.value_gradient"):
        load_recipe(RECIPE, [f"agent.value_gradient={share}"])
