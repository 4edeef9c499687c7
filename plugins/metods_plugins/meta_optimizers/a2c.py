"""Advantage actor-critic through whole lifetimes (backprop through time), with GAE(lambda)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from metods_core import (
    Agent,
    BPTTConfig,
    ComponentConfig,
    Lifetimes,
    MetaOptimizer,
    OuterBatch,
    Replay,
    backward_through_lifetimes,
)
from metods_plugins.meta_optimizers.advantages import generalized_advantages

__all__ = ["A2CMetaOptimizer", "LossTargets", "generalized_advantages"]


@dataclass(frozen=True)
class LossTargets:
    """What the A2C loss compares the agent's outputs to, from the collected lifetimes.

    Attributes:
        advantages: GAE advantages ``(steps, batch)``, standardised if asked.
        returns: the critic's targets ``(steps, batch)``.
        mask: 1.0 on steps of running lifetimes ``(steps, batch)``.
        count: number of running steps in the whole batch (at least 1), 0-dim.
    """

    advantages: torch.Tensor
    returns: torch.Tensor
    mask: torch.Tensor
    count: torch.Tensor


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
        bptt: BPTTConfig = Field(default_factory=lambda: BPTTConfig.model_validate({}))
        """Backprop through time: ``full`` (one graph per lifetime), ``checkpointed`` (same
        gradients, memory bounded by chunks of ``chunk`` steps) or ``truncated``."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def configure_optimizer(self, agent: Agent) -> torch.optim.Optimizer:
        """Return Adam over the agent's trainable meta-parameters (with the rule's lr scales)."""
        groups = agent.parameter_groups(self.config.lr)
        return torch.optim.Adam(groups, lr=self.config.lr, eps=self.config.adam_eps)

    def targets(self, lifetimes: Lifetimes) -> LossTargets:
        """Return the (detached) advantages, returns and step mask of collected lifetimes."""
        cfg = self.config
        values = lifetimes.values.detach()
        rewards = lifetimes.rewards * cfg.reward_scale
        advantages = generalized_advantages(
            rewards, values, lifetimes.alive, cfg.gamma, cfg.gae_lambda
        )
        returns = advantages + values
        mask = lifetimes.alive.float()
        count = mask.sum().clamp(min=1.0)
        if cfg.normalize_advantages:
            mean = (advantages * mask).sum() / count
            std = (((advantages - mean) * mask).pow(2).sum() / count).sqrt()
            advantages = (advantages - mean) / (std + 1e-8) * mask
        return LossTargets(advantages, returns, mask, count)

    def loss_parts(
        self,
        outputs: Lifetimes | Replay,
        targets: LossTargets,
        start: int = 0,
        stop: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return the A2C loss of steps ``[start, stop)`` and its parts.

        Each part is summed over those steps and divided by the whole batch's count of running
        steps, so the losses of consecutive spans add up to the loss of the whole lifetime.
        ``outputs`` holds log-probabilities, values and entropies ``(stop - start, batch)``.
        """
        cfg = self.config
        span = slice(start, stop)
        advantages, mask, count = targets.advantages[span], targets.mask[span], targets.count
        policy_loss = -(outputs.log_probs * advantages * mask).sum() / count
        value_loss = 0.5 * ((targets.returns[span] - outputs.values).pow(2) * mask).sum() / count
        entropy = (outputs.entropies * mask).sum() / count
        loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
        return {
            "loss": loss,
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
        }

    def loss(self, lifetimes: Lifetimes) -> dict[str, torch.Tensor]:
        """Return the A2C loss and its parts, averaged over the steps of running lifetimes."""
        return self.loss_parts(lifetimes, self.targets(lifetimes))

    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        """Collect one lifetime per task, take one Adam step, and return detached metrics."""
        if self.config.bptt.mode == "full":
            lifetimes = batch.run_lifetimes(agent)
            losses = self.loss(lifetimes)
            batch.optimizer.zero_grad(set_to_none=True)
            batch.backward(losses["loss"])
        else:
            lifetimes, losses = self._backward_in_chunks(agent, batch)
        norms = agent.gradient_norms()  # before clipping, like grad_norm
        parameters = [p for group in batch.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.max_grad_norm)
        batch.optimizer.step()
        metrics = {name: value.detach() for name, value in losses.items()}
        metrics["grad_norm"] = grad_norm.detach()
        metrics.update(norms)
        metrics["env_steps"] = lifetimes.env_steps.detach().float()
        for name, value in lifetimes.metrics.items():
            if value.dim() == 1:
                metrics[name] = value.detach().nanmean()
        return metrics

    def _backward_in_chunks(
        self, agent: Agent, batch: OuterBatch
    ) -> tuple[Lifetimes, dict[str, torch.Tensor]]:
        """Collect without a graph, then backpropagate replayed chunks (``config.bptt``)."""
        with torch.no_grad():
            lifetimes = batch.run_lifetimes(agent, record=True)
        assert lifetimes.record is not None  # asked for above
        targets = self.targets(lifetimes)

        def step_loss(replay: Replay, start: int, stop: int) -> torch.Tensor:
            return self.loss_parts(replay, targets, start, stop)["loss"]

        batch.optimizer.zero_grad(set_to_none=True)
        replay = backward_through_lifetimes(
            agent, lifetimes.record, step_loss, batch.backward, self.config.bptt
        )
        return lifetimes, self.loss_parts(replay, targets)
