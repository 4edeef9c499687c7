"""A plain reference implementation of MetODS meta-training on Harlow, for speed comparisons.

The obvious batched PyTorch code a researcher would write from the paper's equations
(Chalvidal et al. 2022, Algorithm 1): vanilla write ``alpha * (v v^T)``, element-wise alpha,
tanh read, learned W0, an encoder ``tanh(Linear(obs, previous action, previous reward))``, a
categorical actor and a value head, and A2C through whole lifetimes with one Adam step per
batch. It steps the same environment as ``recipes/harlow/metods.yaml`` (``HarlowTasks`` of the
plugins, T = 75), so the comparison differs only in the agent and learner code. Deliberately
not optimised: per-recursion and per-level Python loops, a ``bmm`` read, an outer-product
write, no compilation.

Run:  .venv/bin/python benchmarks/plain_metods.py --single 64,20,4 --steps 20 --warmup 3
prints one JSON line (env-steps/s of whole outer steps, ms per step, peak RSS). With ``--train
K`` it trains K steps and prints the mean reward every 50 (a check that it learns).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from metods_plugins.tasks.harlow import HarlowTasks
from torch import nn


class PlainMetODS(nn.Module):
    """Encoder -> MetODS layer (Algorithm 1) -> policy and value heads."""

    def __init__(self, inputs: int, n: int, recursions: int, actions: int) -> None:
        super().__init__()
        self.n, self.recursions = n, recursions
        self.encoder = nn.Linear(inputs, n)
        self.w0 = nn.Parameter(torch.zeros(n, n))  # learned initial weights
        self.alpha = nn.Parameter(torch.ones(n, n))  # one plasticity coefficient per synapse
        kappa, beta = [], []
        for s in range(1, recursions + 1):  # same initial values as the metods rule
            k, b = torch.zeros(s + 1), torch.zeros(s + 1)
            if s == 1:
                k[0], k[1], b[0], b[1] = 1.0, 1.0, 0.95, 0.5
            else:
                k[s - 1], b[1] = 1.0, 1.0
            kappa.append(nn.Parameter(k))
            beta.append(nn.Parameter(b))
        self.kappa, self.beta = nn.ParameterList(kappa), nn.ParameterList(beta)
        self.policy = nn.Linear(n, actions)
        self.value = nn.Linear(n, 1)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One environment step: x ``(B, inputs)``, W ``(B, N, N)`` -> logits, value, new W."""
        y, w = self.plastic_step(torch.tanh(self.encoder(x)), w)
        return self.policy(y), self.value(y).squeeze(-1), w

    def plastic_step(self, v0: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Algorithm 1: S read/write recursions from v(0) ``(B, N)`` and W ``(B, N, N)``."""
        v = [v0]
        ws = [w]
        for s in range(1, self.recursions + 1):
            kappa, beta = self.kappa[s - 1], self.beta[s - 1]
            read = torch.tanh(torch.bmm(ws[s - 1], v[s - 1].unsqueeze(-1)).squeeze(-1))
            v_new = kappa[s] * read
            for level in range(s):
                v_new = v_new + kappa[level] * v[level]
            outer = v[s - 1].unsqueeze(-1) * v[s - 1].unsqueeze(-2)
            w_new = beta[s] * (self.alpha * outer)
            for level in range(s):
                w_new = w_new + beta[level] * ws[level]
            v.append(v_new)
            ws.append(w_new)
        return v[-1], ws[-1]


def outer_step(
    net: PlainMetODS,
    optimizer: torch.optim.Optimizer,
    sampler: HarlowTasks,
    batch: int,
    generator: torch.Generator,
    gamma: float = 0.9,
) -> tuple[float, torch.Tensor]:
    """Run B lifetimes, backprop A2C through all of them, one Adam step; return (loss, reward)."""
    tasks = sampler.sample(batch, "train", generator)
    env = sampler.make_env(tasks)
    obs, _ = env.reset()
    w = net.w0.expand(batch, -1, -1)
    prev_action, prev_reward = torch.zeros(batch, 3), torch.zeros(batch)
    running = torch.ones(batch, dtype=torch.bool)
    log_probs, values, entropies, rewards, alive = [], [], [], [], []
    for _ in range(env.lifetime_steps):
        x = torch.cat([obs.reshape(batch, -1), prev_action, prev_reward.unsqueeze(-1)], dim=-1)
        logits, value, w = net(x, w)
        dist = torch.distributions.Categorical(logits=logits, validate_args=False)
        action = torch.multinomial(dist.probs.detach(), 1, generator=generator).squeeze(-1)
        obs, reward, terminated, truncated, _ = env.step(action)
        log_probs.append(dist.log_prob(action))
        entropies.append(dist.entropy())
        values.append(value)
        rewards.append(reward * running)
        alive.append(running.float())
        running = running & ~(terminated | truncated)
        prev_action = nn.functional.one_hot(action, 3).float()
        prev_reward = reward
    mask = torch.stack(alive)
    returns, ret = [], torch.zeros(batch)
    for r, m in zip(reversed(rewards), reversed(alive), strict=True):
        ret = r + gamma * ret * m
        returns.append(ret)
    returns_t = torch.stack(returns[::-1])
    values_t = torch.stack(values)
    advantage = (returns_t - values_t).detach()
    count = mask.sum().clamp(min=1.0)
    policy_loss = -(torch.stack(log_probs) * advantage * mask).sum() / count
    value_loss = 0.5 * ((returns_t - values_t).pow(2) * mask).sum() / count
    entropy = (torch.stack(entropies) * mask).sum() / count
    loss = policy_loss + 0.1 * value_loss - 0.03 * entropy
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), 4.0)
    optimizer.step()
    return float(loss.detach()), env.lifetime_metrics()["episode_reward"].mean()


def build(batch_n_s: tuple[int, int, int], seed: int = 0) -> tuple:
    """Return (net, Adam, sampler, generator) for Harlow at the recipe's task settings."""
    _, n, s = batch_n_s
    sampler = HarlowTasks(HarlowTasks.Config())
    torch.manual_seed(seed)
    inputs = int(torch.tensor(sampler.observation_space.shape).prod()) + 3 + 1
    net = PlainMetODS(inputs, n, s, 3)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    return net, optimizer, sampler, torch.Generator().manual_seed(seed)


def main() -> None:
    """Time ``--steps`` outer steps after ``--warmup`` (or train ``--train`` steps)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", default="64,20,4", help="B,N,S")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train", type=int, default=0, help="train this many steps instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setting = tuple(int(part) for part in args.single.split(","))
    batch = setting[0]
    net, optimizer, sampler, generator = build(setting)  # type: ignore[arg-type]
    if args.train:
        rewards = []
        for step in range(args.train):
            rewards.append(float(outer_step(net, optimizer, sampler, batch, generator)[1]))
            if (step + 1) % 50 == 0:
                print(f"step {step + 1}: mean reward {sum(rewards[-50:]) / 50:.3f}", flush=True)
        return
    for _ in range(args.warmup):
        outer_step(net, optimizer, sampler, batch, generator)
    start = time.perf_counter()
    for _ in range(args.steps):
        outer_step(net, optimizer, sampler, batch, generator)
    seconds = time.perf_counter() - start
    steps = batch * sampler.lifetime_steps * args.steps
    result = {"impl": "plain", "batch": batch, "N": setting[1], "S": setting[2]}
    result |= {"seconds": seconds, "env_steps_per_s": steps / seconds}
    result |= {"ms_per_outer_step": 1000 * seconds / args.steps, "threads": args.threads}
    result["process_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
