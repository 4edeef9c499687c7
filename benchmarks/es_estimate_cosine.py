"""Agreement of independent ES gradient estimates on Harlow (docs/results.md, ES section).

Draws six OpenAI-ES estimates for the agent of ``recipes/harlow/metods_es.yaml`` (optionally
loaded from a checkpoint) and prints their mean, min and max pairwise cosine, the population's
fitness standard deviation and the share of tied members per estimate. ``same`` evaluates all
six on the same tasks (``sample(batch, "train", Generator().manual_seed(0))``) and differs only
in the perturbation seeds (100-105) and action seeds (200-205); ``fresh`` also draws the tasks
with seeds 0-5. Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/es_estimate_cosine.py same \
        meta_optimizer.pairs=512 [runs/x/checkpoints/last.ckpt]
"""

from __future__ import annotations

import itertools
import sys
import time

import torch
from metods_plugins.meta_optimizers.es import (
    antithetic_noise,
    centered_ranks,
    estimate_gradient,
)
from metods_plugins.meta_optimizers.population import Population

from metods_core.components import create_agent, create_task_sampler
from metods_core.recipe.files import load_recipe


def main(argv: list[str]) -> None:
    """Print the agreement of six estimates (see the module docstring)."""
    torch.set_num_threads(1)
    mode = argv[0]
    overrides = [a for a in argv[1:] if not a.endswith(".ckpt")]
    checkpoints = [a for a in argv[1:] if a.endswith(".ckpt")]
    recipe = load_recipe("recipes/harlow/metods_es.yaml", ["trainer.compile=false", *overrides])
    torch.manual_seed(recipe.seed)  # the agent's initial parameters, as training seeds them
    sampler = create_task_sampler(recipe)
    agent = create_agent(recipe, sampler)
    if checkpoints:
        state = torch.load(checkpoints[0], weights_only=True)["state_dict"]
        agent.load_state_dict({k.removeprefix("agent."): v for k, v in state.items()})
    cfg, batch = recipe.meta_optimizer.config, recipe.data.batch_tasks
    centre = {n: p.detach() for n, p in agent.named_parameters() if p.requires_grad}
    shapes = {n: v.shape for n, v in centre.items()}
    population = Population(agent)
    start = time.process_time()
    estimates, spread = [], []
    for k in range(6):
        task_seed = 0 if mode == "same" else k
        tasks = sampler.sample(batch, "train", torch.Generator().manual_seed(task_seed))
        perturbations = torch.Generator().manual_seed(100 + k)
        noise = antithetic_noise(shapes, cfg.pairs, perturbations, torch.device("cpu"))
        members = {n: centre[n].unsqueeze(0) + cfg.sigma * noise[n] for n in centre}
        env = sampler.make_env(tasks.repeat(2 * cfg.pairs))
        returns, _ = population.run(members, env, torch.Generator().manual_seed(200 + k))
        fitness = returns.mean(dim=1)
        tied = 1 - len(torch.unique(fitness)) / len(fitness)
        ascent = estimate_gradient(centered_ranks(fitness), noise, cfg.sigma)
        estimates.append(torch.cat([v.flatten() for v in ascent.values()]))
        spread.append((round(fitness.std().item(), 3), round(tied, 2)))
    cosines = [
        torch.nn.functional.cosine_similarity(a, b, dim=0).item()
        for a, b in itertools.combinations(estimates, 2)
    ]
    print(
        f"{mode} {overrides} {checkpoints} dims={estimates[0].numel()} pairs={cfg.pairs} "
        f"tasks={batch} sigma={cfg.sigma}"
    )
    print(
        f"  cosine mean {sum(cosines) / len(cosines):.3f} min {min(cosines):.3f} "
        f"max {max(cosines):.3f}; fitness std, tied share: {spread}; "
        f"cpu {time.process_time() - start:.0f} s"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
