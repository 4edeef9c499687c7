"""Advantage estimation shared by the gradient meta-optimizers (A2C, PPO)."""

from __future__ import annotations

import torch


def generalized_advantages(
    rewards: torch.Tensor, values: torch.Tensor, alive: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """Return GAE(lambda) advantages ``(steps, batch)``; a lifetime's end bootstraps with 0.

    Schulman et al. 2016, "High-dimensional continuous control using generalized advantage
    estimation", eq. 16: ``A_t = sum_l (gamma lambda)^l delta_{t+l}``.

    Args:
        rewards: ``(steps, batch)``.
        values: detached critic estimates ``(steps, batch)``.
        alive: ``(steps, batch)`` bool; a step whose successor is not alive ends the lifetime.
        gamma: discount factor.
        lam: GAE lambda (1: Monte-Carlo returns minus values; 0: one-step TD errors).
    """
    steps = rewards.shape[0]
    continues = torch.cat([alive[1:], torch.zeros_like(alive[:1])]).float()
    next_values = torch.cat([values[1:], torch.zeros_like(values[:1])]) * continues
    deltas = rewards + gamma * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(steps)):
        running = deltas[t] + gamma * lam * continues[t] * running
        advantages[t] = running
    return advantages * alive
