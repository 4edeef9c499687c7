"""Evolution strategies (OpenAI-ES) over every meta-parameter: no backward pass.

Follows Salimans et al. 2017 ("Evolution Strategies as a Scalable Alternative to Reinforcement
Learning", Algorithm 2 and section 2.2): an isotropic Gaussian search distribution
``N(theta, sigma^2 I)`` around the current meta-parameters, antithetic pairs
``theta +- sigma * eps_j``, centred-rank fitness shaping, the gradient estimate
``g = 1 / (P sigma) * sum_i rank(F_i) eps_i`` written into each parameter's ``.grad`` (negated:
the optimizer minimises) and an Adam step with L2 weight decay (the paper's ``l2coeff``).

Fitness of a member: its mean lifetime reward (sum of rewards per lifetime, averaged over the
step's tasks). Every member runs on the *same* tasks with the *same* action noise (common
random numbers), so the difference inside an antithetic pair measures the perturbation more
than the tasks' or the dice's luck; the whole population runs in one batched, vmapped forward
pass per environment step (``population.py``). The env's own randomness is shared too: the
env of ``tasks.repeat(P)`` knows it holds ``P`` copies (``TaskBatch.copies``) and draws its
random numbers (Harlow's object sides, the maze's start cells) once per base task, so
identical members on the same tasks get identical fitness (before this contract, 32 identical
members on 16 shared Harlow tasks differed by a fitness std of 0.218). The unperturbed
centre runs in the same pass and its mean reward is logged as ``episode_reward`` (what
``metods evaluate`` will measure).

Under DDP, rank ``r`` evaluates the pairs ``r, r + W, r + 2W...`` on its own task batch; the
noise of every member is drawn on every rank from a seed derived from ``(seed, step)``, the
fitness vector is summed over ranks with ``OuterBatch.all_reduce``, so every rank computes
the same update and the ranks' meta-parameters stay bit-identical.

Why our own ~40 lines rather than a library: evotorch 0.6.1's functional PGPE/SNES would give
the same estimate, but it pulls ray (a cluster runtime) into the install; ``cma`` is CMA-ES,
whose covariance update is O(n^2) in the ~2,600 meta-parameters of the Harlow agent and
numpy-based (a host round-trip per step). The estimator, the noise layout across ranks and the
Adam step on ``.grad`` are the parts this plugin must control, and they are short.
"""

from __future__ import annotations

import torch
from pydantic import Field

from metods_core import Agent, ComponentConfig, MetaOptimizer, OuterBatch, derive_seed
from metods_plugins.meta_optimizers.population import Population


def centered_ranks(fitness: torch.Tensor) -> torch.Tensor:
    """Return the fitness ranks mapped to ``[-0.5, 0.5]`` ``(P,)``; tied members share the
    mean of their ranks.

    The lowest fitness gets -0.5, the highest 0.5, evenly spaced between (Salimans et al.).
    Ties matter: with common random numbers and discrete actions, a small perturbation often
    changes no action, so many members (often both of a pair) tie exactly (measured on Harlow,
    256 pairs x 2 tasks: the whole population tied at most logged steps after step 90).
    Breaking ties by index ranks ``+eps_j`` just below ``-eps_j`` in every tied pair, an
    estimate of pure noise (norm 0.06 there) that Adam rescales to full-size steps; shared
    ranks make a tied pair contribute nothing.
    """
    size = fitness.shape[0]
    # Sorted, a member's mean rank is the midpoint of its run of equal values: (start + end) / 2
    # with the run's first and last positions, found by running max / min (O(P log P), no
    # (P, P) comparison matrix: 20,000 pairs took 14.5 GB that way; no host sync).
    ordered, order = torch.sort(fitness)
    position = torch.arange(size, device=fitness.device)
    first = torch.ones(size, dtype=torch.bool, device=fitness.device)
    first[1:] = ordered[1:] != ordered[:-1]
    last = torch.roll(first, -1)
    last[-1] = True
    start = torch.cummax(torch.where(first, position, 0), 0).values
    end = torch.cummin(torch.where(last, position, size - 1).flip(0), 0).values.flip(0)
    ranks = torch.empty(size, dtype=fitness.dtype, device=fitness.device)
    ranks[order] = (start + end).to(fitness.dtype) / 2
    return ranks / max(size - 1, 1) - 0.5


def antithetic_noise(
    shapes: dict[str, torch.Size], pairs: int, generator: torch.Generator, device: torch.device
) -> dict[str, torch.Tensor]:
    """Return ``eps`` by name, ``(2 * pairs, *shape)``: members ``2j, 2j+1`` are ``+-e_j``."""
    noise = {}
    for name, shape in shapes.items():
        half = torch.randn((pairs, *shape), generator=generator, device=device)
        noise[name] = torch.stack([half, -half], dim=1).reshape(2 * pairs, *shape)
    return noise


def estimate_gradient(
    shaped: torch.Tensor, noise: dict[str, torch.Tensor], sigma: float
) -> dict[str, torch.Tensor]:
    """Return the ascent direction ``1 / (P sigma) sum_i shaped_i eps_i`` by name.

    Args:
        shaped: shaped fitness ``(P,)``.
        noise: ``eps`` by name, ``(P, *shape)``.
        sigma: the search distribution's standard deviation.
    """
    scale = 1.0 / (shaped.shape[0] * sigma)
    return {name: torch.tensordot(shaped, eps, dims=1) * scale for name, eps in noise.items()}


class ESMetaOptimizer(MetaOptimizer):
    """OpenAI-ES: antithetic Gaussian perturbations, centred ranks, Adam on the estimate."""

    uses_gradients = False

    class Config(ComponentConfig):
        """Parameters of the evolution-strategies meta-optimizer."""

        pairs: int = Field(32, gt=0)
        """Antithetic pairs per outer step: the population has ``2 * pairs`` members."""
        sigma: float = Field(0.03, gt=0)
        """Standard deviation of the Gaussian perturbations of the meta-parameters."""
        lr: float = Field(0.01, gt=0)
        """Adam learning rate (scaled per parameter by the rule's learning-rate scales)."""
        weight_decay: float = Field(0.005, ge=0)
        """L2 coefficient added to the estimated gradient (Salimans et al.'s l2coeff)."""
        adam_eps: float = Field(1e-8, gt=0)
        """Adam's epsilon."""
        evaluate_centre: bool = True
        """Also run the unperturbed meta-parameters (one more member in the same pass) and
        log their mean reward as ``episode_reward``; False logs the population's mean."""
        seed: int = 0
        """Seed of the perturbations, combined with the outer-step index (same on all ranks)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._population: Population | None = None
        self.last_members: list[int] = []
        """The members this process evaluated at the last step (for tests and debugging)."""

    def configure_optimizer(self, agent: Agent) -> torch.optim.Optimizer:
        """Return Adam over the agent's trainable meta-parameters (with the rule's lr scales)."""
        cfg = self.config
        groups = agent.parameter_groups(cfg.lr)
        return torch.optim.Adam(groups, lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)

    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        """Evaluate this rank's members, share the fitness, and take one Adam step."""
        cfg = self.config
        names = {id(parameter): name for name, parameter in agent.named_parameters()}
        trained = [p for group in batch.optimizer.param_groups for p in group["params"]]
        centre = {names[id(p)]: p.detach() for p in trained}
        device = trained[0].device
        noise_generator = torch.Generator(device=device)
        noise_generator.manual_seed(derive_seed("es", cfg.seed, batch.step))
        shapes = {name: value.shape for name, value in centre.items()}
        noise = antithetic_noise(shapes, cfg.pairs, noise_generator, device)
        # ---- this rank's antithetic pairs, all on its tasks with the same action noise ----
        if cfg.pairs < batch.world_size:
            raise ValueError(
                f"es: {cfg.pairs} pairs cannot be shared by {batch.world_size} processes; "
                f"set meta_optimizer.pairs to at least {batch.world_size}"
            )
        own_pairs = list(range(batch.rank, cfg.pairs, batch.world_size))
        own = [member for pair in own_pairs for member in (2 * pair, 2 * pair + 1)]
        self.last_members = own
        index = torch.tensor(own, dtype=torch.long, device=device)
        members = {
            name: value.unsqueeze(0) + cfg.sigma * noise[name].index_select(0, index)
            for name, value in centre.items()
        }
        if cfg.evaluate_centre:
            members = {
                name: torch.cat([value, centre[name].unsqueeze(0)])
                for name, value in members.items()
            }
        size = next(iter(members.values())).shape[0]
        env = batch.make_env(batch.tasks.repeat(size))
        if self._population is None or self._population.agent is not agent:
            self._population = Population(agent)
        returns, env_steps = self._population.run(members, env, batch.generator)
        fitness_own = returns.mean(dim=1)
        fitness = torch.zeros(2 * cfg.pairs, device=device, dtype=fitness_own.dtype)
        fitness = fitness.index_copy(0, index, fitness_own[: len(own)])
        fitness = batch.all_reduce(fitness, op="sum")
        # ---- OpenAI-ES update: centred ranks, gradient estimate, Adam ----
        ascent = estimate_gradient(centered_ranks(fitness), noise, cfg.sigma)
        batch.optimizer.zero_grad(set_to_none=True)
        for parameter in trained:
            parameter.grad = -ascent[names[id(parameter)]].to(parameter.dtype)
        grad_norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in ascent.values()]))
        batch.optimizer.step()
        if cfg.evaluate_centre:
            reward = batch.all_reduce(fitness_own[-1], op="mean")
        else:
            reward = fitness.mean()
        return {
            "loss": -fitness.mean().detach(),
            "fitness_mean": fitness.mean().detach(),
            "fitness_max": fitness.max().detach(),
            "fitness_std": fitness.std().detach(),
            "episode_reward": reward.detach(),
            "grad_norm": grad_norm.detach(),
            "env_steps": env_steps.detach().float(),
            "sigma": torch.tensor(cfg.sigma),
        }
