"""Evolution strategies: antithetic pairs, rank shaping, the gradient estimate, the batched
population pass against separate runs and compiled against eager, no backward pass,
conformance, and 2-process DDP."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from metods_plugins.meta_optimizers.es import (
    ESMetaOptimizer,
    antithetic_noise,
    centered_ranks,
    estimate_gradient,
)
from metods_plugins.meta_optimizers.population import PopulationUnsupportedError, run_population
from metods_plugins.plasticity.fast_weights import FastWeightsRule
from metods_plugins.plasticity.hebbian import HebbianRule
from metods_plugins.plasticity.metods import MetODSRule
from metods_plugins.plasticity.neuromodulated import NeuromodulatedRule
from metods_plugins.plasticity.recurrent import GRURule, LSTMRule, RNNRule
from metods_plugins.plasticity.static import StaticRule
from metods_plugins.readout.categorical import CategoricalReadout
from metods_plugins.readout.gaussian import GaussianReadout
from metods_plugins.tasks.harlow import HarlowTasks

from metods_core.agent import Agent, AgentConfig
from metods_core.interfaces import PlasticityRule
from metods_core.rollout import run_lifetimes
from metods_core.testing import check_meta_optimizer
from metods_core.testing.fakes import FakeTasks, create_tiny_agent
from metods_core.testing.meta_optimizer import outer_batch

ROOT = Path(__file__).resolve().parents[2]
RULES = [MetODSRule, StaticRule, RNNRule, GRURule, HebbianRule, NeuromodulatedRule, FastWeightsRule]


def test_centered_ranks_hand_computed() -> None:
    """Ranks map evenly onto [-0.5, 0.5]: the worst gets -0.5, the best 0.5, whatever the scale."""
    shaped = centered_ranks(torch.tensor([3.0, -100.0, 2.0, 1e6, 2.5]))
    torch.testing.assert_close(shaped, torch.tensor([0.25, -0.5, -0.25, 0.5, 0.0]))


def test_centered_ranks_share_ties() -> None:
    """Tied members get the mean of their ranks, so an antithetic pair whose members tie adds
    nothing to the estimate: ranks (0, 1.5, 1.5, 3) of 3 -> (-0.5, 0, 0, 0.5); all tied -> 0."""
    shaped = centered_ranks(torch.tensor([1.0, 2.0, 2.0, 5.0]))
    torch.testing.assert_close(shaped, torch.tensor([-0.5, 0.0, 0.0, 0.5]))
    assert torch.equal(centered_ranks(torch.full((6,), 0.2)), torch.zeros(6))
    noise = antithetic_noise(
        {"w": torch.Size([3])}, 2, torch.Generator().manual_seed(0), torch.device("cpu")
    )
    ascent = estimate_gradient(centered_ranks(torch.tensor([1.0, 1.0, 2.0, 0.0])), noise, 0.1)
    torch.testing.assert_close(ascent["w"], noise["w"][2] / (4 * 0.1))


@pytest.mark.parametrize("values", [3, 1000], ids=["many-ties", "few-ties"])
def test_centered_ranks_equal_the_counting_definition(values: int) -> None:
    """The sort-based ranks equal rank = #below + (#equal - 1) / 2 counted pairwise, in any
    order, with many or few ties, and for a single member."""
    generator = torch.Generator().manual_seed(values)
    for size in (1, 2, 7, 64, 301):
        fitness = torch.randint(0, values, (size,), generator=generator).double()
        below = (fitness.unsqueeze(0) < fitness.unsqueeze(1)).sum(1).double()
        equal = (fitness.unsqueeze(0) == fitness.unsqueeze(1)).sum(1).double()
        expected = (below + (equal - 1) / 2) / max(size - 1, 1) - 0.5
        torch.testing.assert_close(centered_ranks(fitness), expected, rtol=0, atol=1e-12)


def test_antithetic_pairs_are_opposite() -> None:
    """Member 2j is +eps_j and member 2j+1 is -eps_j, for every parameter."""
    noise = antithetic_noise(
        {"a": torch.Size([2, 3]), "b": torch.Size([4])},
        pairs=3,
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
    )
    for eps in noise.values():
        assert eps.shape[0] == 6
        torch.testing.assert_close(eps[1::2], -eps[0::2])
        assert not torch.equal(eps[0], eps[2]), "two pairs drew the same perturbation"


def test_estimate_gradient_hand_computed() -> None:
    """g = 1 / (P sigma) sum_i F_i eps_i: F (0.5, -0.5), eps +-(1, 2), sigma 0.5 -> (1, 2)."""
    noise = {"w": torch.tensor([[1.0, 2.0], [-1.0, -2.0]])}
    ascent = estimate_gradient(torch.tensor([0.5, -0.5]), noise, sigma=0.5)
    torch.testing.assert_close(ascent["w"], torch.tensor([1.0, 2.0]))


def test_gradient_on_a_quadratic_matches_the_analytic_one() -> None:
    """On F(x) = -|x - target|^2, raw-fitness antithetic ES estimates grad F without bias, and
    the rank-shaped estimate points the same way (uphill in fitness, downhill in loss)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    target = torch.tensor([1.0, 1.0, -1.0, 0.5], dtype=torch.float64)
    sigma, pairs = 0.1, 20000
    noise = antithetic_noise({"x": x.shape}, pairs, generator, torch.device("cpu"))
    eps = noise["x"].double()
    fitness = -(x + sigma * eps - target).pow(2).sum(-1)
    analytic = -2 * (x - target)
    raw = estimate_gradient(fitness, {"x": eps}, sigma)["x"]
    torch.testing.assert_close(raw, analytic, atol=0.1, rtol=0.05)
    shaped = estimate_gradient(centered_ranks(fitness), {"x": eps}, sigma)["x"]
    cosine = torch.nn.functional.cosine_similarity(shaped, analytic, dim=0)
    assert cosine > 0.95, f"the rank-shaped estimate is at cosine {cosine:.3f} of the gradient"


def _three_perturbed_members(agent: Agent) -> dict[str, torch.Tensor]:
    """Three members ``(3, *shape)`` by name: the agent's parameters plus 0.3 N(0, 1) noise
    (seed 7)."""
    generator = torch.Generator().manual_seed(7)
    return {
        name: p.detach() + 0.3 * torch.randn((3, *p.shape), generator=generator)
        for name, p in agent.named_parameters()
    }


def _agent(rule_cls: type[PlasticityRule], continuous: bool) -> tuple[Agent, FakeTasks]:
    sampler = FakeTasks(FakeTasks.Config(continuous=continuous))
    rule = rule_cls(rule_cls.Config(), 6)
    readout_cls = GaussianReadout if continuous else CategoricalReadout
    readout = readout_cls(readout_cls.Config(), rule.output_size, sampler.action_space)
    agent = Agent(
        AgentConfig(hidden=6), sampler.observation_space, sampler.action_space, rule, readout
    )
    return agent, sampler


@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "gaussian"])
@pytest.mark.parametrize("rule_cls", RULES, ids=lambda cls: cls.__name__)
def test_batched_population_equals_separate_runs(
    rule_cls: type[PlasticityRule], continuous: bool
) -> None:
    """One vmapped pass over P members gives each member the rewards of its own rollout on the
    same tasks with the same action noise (a fresh generator of the same seed)."""
    agent, sampler = _agent(rule_cls, continuous)
    tasks = sampler.sample(5, "train", torch.Generator().manual_seed(3))
    members = _three_perturbed_members(agent)
    returns, steps = run_population(
        agent, members, sampler.make_env(tasks.repeat(3)), torch.Generator().manual_seed(11)
    )
    assert returns.shape == (3, 5) and int(steps) == 3 * 5 * sampler.lifetime_steps
    for member in range(3):
        alone = copy.deepcopy(agent)
        with torch.no_grad():
            for name, parameter in alone.named_parameters():
                parameter.copy_(members[name][member])
            lifetimes = run_lifetimes(
                alone, sampler.make_env(tasks), torch.Generator().manual_seed(11)
            )
        expected = (lifetimes.rewards * lifetimes.alive).sum(0)
        torch.testing.assert_close(returns[member], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(returns[0], returns[1]), "members did not differ at all"


@pytest.mark.slow
def test_compiled_population_equals_the_eager_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the agent compiled (``trainer.compile``), the population compiles its vmapped step
    through ``Agent.compiled``, with the agent's options (the C++ wrapper by default): the
    members' returns are the eager pass's."""
    agent, sampler = _agent(MetODSRule, continuous=True)
    compiled = copy.deepcopy(agent)
    compiled.compile_step()
    options: list[object] = []
    real_compile = torch.compile

    def recording_compile(function, **kwargs):  # the real torch.compile, its options noted
        options.append(kwargs.get("options"))
        return real_compile(function, **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    tasks = sampler.sample(5, "train", torch.Generator().manual_seed(3))
    members = _three_perturbed_members(agent)
    returns = [
        run_population(
            each, members, sampler.make_env(tasks.repeat(3)), torch.Generator().manual_seed(11)
        )[0]
        for each in (agent, compiled)
    ]
    assert options == [{"cpp_wrapper": True}], "only the compiled agent's population compiles"
    torch.testing.assert_close(returns[1], returns[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(returns[0][0], returns[0][1]), "members did not differ at all"


def test_population_on_harlow_equals_separate_runs_with_common_sides() -> None:
    """On Harlow, whose env draws random sides, the vmapped pass still gives each member the
    rewards of its own rollout on the untiled tasks (the tiled copies share the sides: common
    random numbers), and identical members get identical rewards on every task."""
    sampler = HarlowTasks(HarlowTasks.Config(max_steps=30))
    rule = MetODSRule(MetODSRule.Config(), 6)
    readout = CategoricalReadout(
        CategoricalReadout.Config(), rule.output_size, sampler.action_space
    )
    agent = Agent(
        AgentConfig(hidden=6), sampler.observation_space, sampler.action_space, rule, readout
    )
    tasks = sampler.sample(4, "train", torch.Generator().manual_seed(3))
    members = _three_perturbed_members(agent)
    returns, _ = run_population(
        agent, members, sampler.make_env(tasks.repeat(3)), torch.Generator().manual_seed(11)
    )
    for member in range(3):
        alone = copy.deepcopy(agent)
        with torch.no_grad():
            for name, parameter in alone.named_parameters():
                parameter.copy_(members[name][member])
            lifetimes = run_lifetimes(
                alone, sampler.make_env(tasks), torch.Generator().manual_seed(11)
            )
        expected = (lifetimes.rewards * lifetimes.alive).sum(0)
        torch.testing.assert_close(returns[member], expected, rtol=1e-5, atol=1e-5)
    same = {name: p.detach().expand(3, *p.shape) for name, p in agent.named_parameters()}
    returns, _ = run_population(
        agent, same, sampler.make_env(tasks.repeat(3)), torch.Generator().manual_seed(11)
    )
    assert torch.equal(returns[1], returns[0]) and torch.equal(returns[2], returns[0])
    assert returns.std() > 0, "the tasks all gave the same reward: the check would be vacuous"


def test_lstm_is_refused_with_a_clear_error() -> None:
    """The LSTM rule (no vmap batching rule for its fused cell) fails with a message naming
    the rule and the alternatives, not a bare functorch error."""
    agent, sampler = _agent(LSTMRule, continuous=False)
    tasks = sampler.sample(2, "train", torch.Generator().manual_seed(3))
    members = {name: p.detach().expand(2, *p.shape) for name, p in agent.named_parameters()}
    with pytest.raises(PopulationUnsupportedError, match="LSTMRule.*a2c or ppo"):
        run_population(agent, members, sampler.make_env(tasks.repeat(2)), torch.Generator())


def test_no_backward_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """ES never calls backward (on a tensor, through autograd, or OuterBatch.backward) and
    still moves the meta-parameters."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("ES called a backward pass")

    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)
    meta_optimizer = ESMetaOptimizer(ESMetaOptimizer.Config(pairs=4))
    agent, sampler = create_tiny_agent()
    optimizer = meta_optimizer.configure_optimizer(agent)
    before = [p.detach().clone() for p in agent.parameters()]
    metrics = meta_optimizer.training_step(agent, outer_batch(sampler, optimizer, 0, refuse))
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.parameters(), strict=True))
    assert {"fitness_mean", "fitness_max", "fitness_std", "episode_reward", "grad_norm"} <= set(
        metrics
    )
    assert {"env_steps", "sigma"} <= set(metrics)


@pytest.mark.slow
def test_conformance() -> None:
    """ES passes the meta-optimizer conformance suite (tiny Lightning runs, resume, 2-process
    DDP: about 35 s here)."""
    check_meta_optimizer(ESMetaOptimizer, pairs=4)


@pytest.mark.slow
def test_ddp_ranks_share_members_and_stay_identical(tmp_path: Path) -> None:
    """On 2 CPU processes the ranks evaluate different pairs, every pair is evaluated once, and
    the meta-parameters stay bit-identical."""
    run_dir = tmp_path / "ddp"
    helpers = os.pathsep.join([str(ROOT / "tests" / "helpers"), str(Path(__file__).parent)])
    env = dict(os.environ, PYTHONPATH=helpers, OMP_NUM_THREADS="1")
    script = Path(__file__).parent / "es_ddp_check.py"
    recipe = ROOT / "recipes" / "harlow" / "metods_es.yaml"
    subprocess.run(
        [sys.executable, str(script), str(recipe), str(run_dir)],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    ranks = [json.loads((run_dir / f"rank{k}.json").read_text()) for k in (0, 1)]
    members = [json.loads((run_dir / f"members{k}.json").read_text()) for k in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert len(members[0]) == len(members[1]) == 3
    for own0, own1 in zip(members[0], members[1], strict=True):
        assert own0 and own1 and not set(own0) & set(own1)
        assert sorted(own0 + own1) == list(range(8))
    assert ranks[0]["parameters"] == ranks[1]["parameters"]
    assert ranks[0]["tasks"] != ranks[1]["tasks"]
