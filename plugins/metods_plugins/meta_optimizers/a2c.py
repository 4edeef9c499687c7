"""Advantage actor-critic through whole lifetimes (backprop through time), with GAE(lambda)."""

from __future__ import annotations

import torch
from pydantic import Field

from metods_core.agent import Agent
from metods_core.interfaces import ComponentConfig, MetaOptimizer, OuterBatch
from metods_core.rollout import Lifetimes
from metods_plugins.meta_optimizers.advantages import generalized_advantages

__all__ = ["A2CMetaOptimizer", "generalized_advantages"]


class A2CMetaOptimizer(MetaOptimizer):
    """A2C meta-training: policy gradient with a critic, BPTT through each lifetime, Adam."""

    class Config(ComponentConfig):
        """Parameters of the A2C meta-optimizer."""

        lr: float = Field(1e-3, gt=0)
        """Adam learning rate."""
        gamma: float = Field(0.9, ge=0, le=1)
        """Discount factor."""
        gae_lambda: float = Field(1.0, ge=0, le=1)
        """GAE lambda (1: Monte-Carlo returns minus the value baseline)."""
        value_coef: float = Field(0.1, ge=0)
        """Weight of the critic's squared error in the loss."""
        entropy_coef: float = Field(0.03, ge=0)
        """Weight of the entropy bonus."""
        max_grad_norm: float = Field(4.0, gt=0)
        """Clip the gradients' global norm to this."""
        adam_eps: float = Field(1e-8, gt=0)
        """Adam's epsilon."""
        reward_scale: float = Field(1.0, gt=0)
        """Multiply the rewards by this in the loss only (the agent's reward input and the
        logged rewards are unscaled): keeps long-horizon returns, and so the critic's error,
        of order one (e.g. 0.1 for MuJoCo's 200-step episodes)."""
        normalize_advantages: bool = False
        """Standardise the advantages over the batch's running steps (mean 0, standard
        deviation 1) before the policy loss, as Stable-Baselines3's option of that name."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def configure_optimizer(self, agent: Agent) -> torch.optim.Optimizer:
        """Return Adam over the agent's trainable meta-parameters (with the rule's lr scales)."""
        groups = agent.parameter_groups(self.config.lr)
        return torch.optim.Adam(groups, lr=self.config.lr, eps=self.config.adam_eps)

    def loss(self, lifetimes: Lifetimes) -> dict[str, torch.Tensor]:
        """Return the A2C loss and its parts, averaged over the steps of running lifetimes."""
        cfg = self.config
        rewards = lifetimes.rewards * cfg.reward_scale
        advantages = generalized_advantages(
            rewards, lifetimes.values.detach(), lifetimes.alive, cfg.gamma, cfg.gae_lambda
        )
        returns = advantages + lifetimes.values.detach()
        mask = lifetimes.alive.float()
        count = mask.sum().clamp(min=1.0)
        if cfg.normalize_advantages:
            mean = (advantages * mask).sum() / count
            std = (((advantages - mean) * mask).pow(2).sum() / count).sqrt()
            advantages = (advantages - mean) / (std + 1e-8) * mask
        policy_loss = -(lifetimes.log_probs * advantages * mask).sum() / count
        value_loss = 0.5 * ((returns - lifetimes.values).pow(2) * mask).sum() / count
        entropy = (lifetimes.entropies * mask).sum() / count
        loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
        return {
            "loss": loss,
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
        }

    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        """Collect one lifetime per task, take one Adam step, and return detached metrics."""
        lifetimes = batch.run_lifetimes(agent)
        losses = self.loss(lifetimes)
        batch.optimizer.zero_grad(set_to_none=True)
        batch.backward(losses["loss"])
        parameters = [p for group in batch.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.max_grad_norm)
        batch.optimizer.step()
        metrics = {name: value.detach() for name, value in losses.items()}
        metrics["grad_norm"] = grad_norm.detach()
        metrics["env_steps"] = lifetimes.env_steps.detach().float()
        for name, value in lifetimes.metrics.items():
            if value.dim() == 1:
                metrics[name] = value.detach().nanmean()
        return metrics
