"""Lifetimes of several episodes: synapses persist across boundaries, the agent is told of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metods_core.components import create_agent, create_task_sampler
from metods_core.recipe import load_recipe
from metods_core.rollout import run_lifetimes

pytest.importorskip("mujoco")

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mujoco" / "cheetah_dir_metods.yaml"


def test_state_persists_and_boundary_is_an_encoder_input() -> None:
    """With 2 episodes of 3 steps, the 4th observation is flagged and W is carried over."""
    recipe = load_recipe(
        RECIPE,
        ["task.episode_steps=3", "task.episodes_per_lifetime=2", "trainer.compile=false"],
    )
    sampler = create_task_sampler(recipe)
    torch.manual_seed(0)
    agent = create_agent(recipe, sampler)
    assert agent.boundary_input and sampler.episodes_per_lifetime == 2
    flags: list[torch.Tensor] = []
    agent.encoder.register_forward_hook(lambda module, args, out: flags.append(args[0][:, -1]))
    states_in: list[torch.Tensor] = []
    states_out: list[torch.Tensor] = []
    step = agent.rule.step

    def recording_step(x: torch.Tensor, state: torch.Tensor):
        states_in.append(state)
        output, new_state = step(x, state)
        states_out.append(new_state)
        return output, new_state

    agent.rule.step = recording_step  # type: ignore[method-assign]
    tasks = sampler.sample(2, "train", torch.Generator().manual_seed(0))
    with torch.no_grad():
        lifetimes = run_lifetimes(agent, sampler.make_env(tasks), torch.Generator().manual_seed(1))
    assert lifetimes.alive.shape == (6, 2) and bool(lifetimes.alive.all())
    assert [float(f[0]) for f in flags] == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert torch.equal(states_in[3], states_out[2]), "the synapses were reset at the boundary"
    assert not torch.equal(states_in[3], agent.init_state(2))


def test_single_episode_tasks_add_no_input() -> None:
    """Tasks of one episode per lifetime build agents without the boundary input."""
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "harlow" / "metods.yaml")
    agent = create_agent(recipe, create_task_sampler(recipe))
    assert not agent.boundary_input
