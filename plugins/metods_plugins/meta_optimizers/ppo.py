"""Proximal policy optimisation for stateful (plastic) policies, RL^2 style.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (clipped surrogate, eq. 7;
GAE; several epochs of minibatches), applied as in Duan et al. 2016 (RL^2) to a policy with
memory: a minibatch is a set of *whole lifetimes* (tasks, never cut in time), replayed through
the agent from its initial plastic state with the recorded inputs, so that the gradient flows
through the whole lifetime under the current meta-parameters. With ``window``, a minibatch is a
set of windows of lifetimes instead, each replayed from its stored plastic state
(``metods_core.windows``), for lifetimes too long to replay whole several times per step.
Target-KL early stopping and value clipping follow the options of Stable-Baselines3's PPO.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field, model_validator

from metods_core.agent import GRADIENT_NORM_METRICS, Agent
from metods_core.bptt import BPTTConfig, backward_through_lifetimes
from metods_core.interfaces import ComponentConfig, MetaOptimizer, OuterBatch
from metods_core.rollout import Lifetimes, Replay, replay_lifetimes
from metods_core.windows import Windows, split_into_windows, to_windows
from metods_plugins.meta_optimizers.advantages import generalized_advantages

TERMS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
"""The additive terms of ``PPOMinibatch.step_terms``, each a mean over running steps."""

MAX_LOG_RATIO = 20.0
"""Bound on ``|log pi_new - log pi_old|`` before ``exp``: a ratio of e^20 already carries no
gradient through either clipped branch, and beyond about e^88 float32's ``exp`` gives inf, whose
zero gradient in the unselected branch of ``min``/``max`` becomes 0 * inf = NaN (measured: a
tanh-squashed cheetah policy's saturated actions reached log-ratios of 24-93 after one Adam
step, and the gradients became non-finite)."""


@dataclass
class PPOMinibatch:
    """The fixed targets of one minibatch of ``batch`` whole lifetimes of ``steps`` steps.

    Every tensor is detached and ``(steps, batch)``; ``count`` is the number of running steps
    (0-dim), by which every term is normalised, so that terms over step spans add up.

    Attributes:
        old_log_probs: log-probabilities of the actions under the collecting policy.
        old_values: the collecting critic's estimates.
        advantages: GAE advantages (normalised over the minibatch if configured), 0 at dead steps.
        returns: critic targets, advantages (before normalisation) plus old values.
        mask: 1.0 at running steps, 0.0 after a lifetime's end.
        count: number of running steps, at least 1.
        config: the PPO parameters (clip ranges, loss weights).
    """

    old_log_probs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    mask: torch.Tensor
    count: torch.Tensor
    config: PPOMetaOptimizer.Config

    # ---- the algorithmic core: the loss over a span of steps ----

    def step_terms(self, replay: Replay, start: int, stop: int) -> dict[str, torch.Tensor]:
        """Return the minibatch's loss terms (``TERMS``) over steps ``[start, stop)``.

        ``replay`` holds the agent's outputs ``(stop - start, k)`` on exactly those steps. Each
        term is a sum over the span divided by the minibatch's total running-step count, so the
        terms of consecutive spans add up to those of the whole lifetime (chunked BPTT).
        """
        cfg = self.config
        span = slice(start, stop)
        mask, count = self.mask[span], self.count
        advantages, returns = self.advantages[span], self.returns[span]
        log_ratio = (replay.log_probs - self.old_log_probs[span]) * mask
        ratio = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()
        surrogate = torch.min(
            ratio * advantages, ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip) * advantages
        )
        if cfg.dual_clip is not None:  # Ye et al. 2020: bound the loss where advantages < 0
            bounded = torch.max(surrogate, cfg.dual_clip * advantages)
            surrogate = torch.where(advantages < 0, bounded, surrogate)
        policy_loss = -(surrogate * mask).sum() / count
        squared = (replay.values - returns).pow(2)
        if cfg.value_clip is not None:
            old_values = self.old_values[span]
            clipped = old_values + (replay.values - old_values).clamp(
                -cfg.value_clip, cfg.value_clip
            )
            squared = torch.max(squared, (clipped - returns).pow(2))
        value_loss = 0.5 * (squared * mask).sum() / count
        entropy = (replay.entropies * mask).sum() / count
        with torch.no_grad():
            # Schulman's low-variance estimator of KL(old || new): (r - 1) - log r >= 0.
            approx_kl = (((ratio - 1.0) - log_ratio) * mask).sum() / count
            clipped_steps = ((ratio - 1.0).abs() > cfg.clip).float() * mask
            clip_fraction = clipped_steps.sum() / count
        loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
        return {
            "loss": loss,
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "approx_kl": approx_kl,
            "clip_fraction": clip_fraction,
        }

    def step_loss(self, replay: Replay, start: int, stop: int) -> torch.Tensor:
        """Return the minibatch's loss over steps ``[start, stop)`` (see ``step_terms``)."""
        return self.step_terms(replay, start, stop)["loss"]


class PPOMetaOptimizer(MetaOptimizer):
    """PPO meta-training: K epochs of clipped-surrogate updates on replayed whole lifetimes."""

    class Config(ComponentConfig):
        """Parameters of the PPO meta-optimizer."""

        lr: float = Field(1e-3, gt=0)
        """Adam learning rate."""
        gamma: float = Field(0.9, ge=0, le=1)
        """Discount factor."""
        gae_lambda: float = Field(0.95, ge=0, le=1)
        """GAE lambda (1: Monte-Carlo returns minus the value baseline)."""
        epochs: int = Field(4, ge=1)
        """Passes over the collected lifetimes per outer step (K)."""
        minibatches: int = Field(2, ge=1)
        """Minibatches per epoch, of whole lifetimes (or of windows, with ``window``); at most
        the number of tasks per batch (of windows)."""
        clip: float = Field(0.2, gt=0)
        """Clip range epsilon of the probability ratio in the surrogate objective."""
        value_clip: float | None = Field(None, gt=0)
        """If set, also clip the critic's change from its collected estimate to this range and
        take the larger of the clipped and unclipped squared errors (PPO2's value clipping)."""
        value_coef: float = Field(0.1, ge=0)
        """Weight of the critic's squared error in the loss."""
        entropy_coef: float = Field(0.03, ge=0)
        """Weight of the entropy bonus."""
        normalize_advantages: bool = True
        """Standardise the advantages over each minibatch's running steps (mean 0, standard
        deviation 1) before the policy loss."""
        dual_clip: float | None = Field(None, gt=1)
        """If set (e.g. 3), dual-clip PPO (Ye et al. 2020): where the advantage is negative the
        surrogate is at least ``dual_clip * advantage``, so a step whose probability ratio grew
        past ``dual_clip`` gives no gradient instead of one proportional to the ratio. Aimed at
        saturated squashed actions, whose log-probabilities can move by tens of nats per update
        (on cheetah_dir it kept the gradients finite, but did not stop the collapse)."""
        target_kl: float | None = Field(None, gt=0)
        """If set, stop the outer step's epochs before any update whose replay shows an
        approximate KL divergence from the collecting policy above this (Stable-Baselines3's
        rule, with the threshold itself rather than 1.5 times it)."""
        max_grad_norm: float = Field(4.0, gt=0)
        """Clip the gradients' global norm to this before each Adam step."""
        skip_grad_norm: float | None = Field(None, gt=0)
        """If set, a spike guard: a minibatch update whose gradient norm before clipping is
        above this takes no Adam step (its gradients are dropped). For the rare batches whose
        backprop through the plastic state explodes: on ML1 reach the norm is 20-60, and 150 to
        3,500 in the outer steps where a good policy collapsed (docs/results.md). Set it from the
        logged ``grad_norm``; one host sync per update; ``skipped_updates`` logs the fraction."""
        adam_eps: float = Field(1e-8, gt=0)
        """Adam's epsilon."""
        reward_scale: float = Field(1.0, gt=0)
        """Multiply the rewards by this in the loss only (the agent's reward input and the
        logged rewards are unscaled), as A2C's option of that name."""
        bptt: BPTTConfig = Field(default_factory=lambda: BPTTConfig.model_validate({}))
        """Backprop through each minibatch's replayed lifetimes: ``full`` (one graph),
        ``checkpointed`` (same gradients, memory bounded by chunks of ``chunk`` steps) or
        ``truncated``. With ``target_kl``, a chunked minibatch is backpropagated before its KL
        is known; its gradients are discarded if the epochs stop there."""
        window: int | None = Field(None, gt=0)
        """If set, the minibatches are made of windows of this many steps instead of whole
        lifetimes: each window replays from the plastic state the collecting policy had at its
        first step (recurrent PPO's stored state, ``metods_core.windows``), all windows side by
        side, so a replay is ``window`` sequential steps instead of the whole lifetime. No
        gradient flows between windows; ``minibatches`` then splits the ``ceil(steps / window)
        * tasks`` windows. Requires ``bptt.mode: full`` (each window is one graph)."""

        @model_validator(mode="after")
        def _window_replays_whole(self) -> PPOMetaOptimizer.Config:
            if self.window is not None and self.bptt.mode != "full":
                raise ValueError(
                    f"window={self.window} replays each window as one graph, but bptt.mode is "
                    f"'{self.bptt.mode}': set meta_optimizer.bptt.mode=full, or drop the window"
                )
            return self

    def __init__(self, config: Config) -> None:
        self.config = config

    def configure_optimizer(self, agent: Agent) -> torch.optim.Optimizer:
        """Return Adam over the agent's trainable meta-parameters (with the rule's lr scales)."""
        groups = agent.parameter_groups(self.config.lr)
        return torch.optim.Adam(groups, lr=self.config.lr, eps=self.config.adam_eps)

    def advantages(self, lifetimes: Lifetimes) -> tuple[torch.Tensor, torch.Tensor]:
        """Return GAE advantages and returns ``(steps, batch)`` of collected lifetimes."""
        cfg = self.config
        values = lifetimes.values.detach()
        rewards = lifetimes.rewards.detach() * cfg.reward_scale
        advantages = generalized_advantages(
            rewards, values, lifetimes.alive, cfg.gamma, cfg.gae_lambda
        )
        return advantages, advantages + values

    def minibatch(
        self,
        lifetimes: Lifetimes,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        index: torch.Tensor,
    ) -> PPOMinibatch:
        """Return the targets of the lifetimes ``index`` ``(k,)`` (whole, in time)."""
        mask = lifetimes.alive[:, index].float()
        count = mask.sum().clamp(min=1.0)
        chosen = advantages[:, index]
        if self.config.normalize_advantages:
            mean = (chosen * mask).sum() / count
            std = (((chosen - mean) * mask).pow(2).sum() / count).sqrt()
            chosen = (chosen - mean) / (std + 1e-8) * mask
        return PPOMinibatch(
            old_log_probs=lifetimes.log_probs[:, index].detach(),
            old_values=lifetimes.values[:, index].detach(),
            advantages=chosen,
            returns=returns[:, index],
            mask=mask,
            count=count,
            config=self.config,
        )

    def minibatch_terms(
        self, agent: Agent, lifetimes: Lifetimes, targets: PPOMinibatch, index: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Replay the whole lifetimes ``index`` from the initial plastic state; return terms.

        The terms are attached to the graph of the replay (BPTT through the lifetimes).
        """
        assert lifetimes.record is not None
        replay = replay_lifetimes(agent, lifetimes.record.select(index))
        return targets.step_terms(replay, 0, replay.log_probs.shape[0])

    def minibatch_backward(
        self,
        agent: Agent,
        batch: OuterBatch,
        lifetimes: Lifetimes,
        targets: PPOMinibatch,
        index: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Replay the lifetimes ``index`` and backpropagate them chunk by chunk
        (``config.bptt``) into zeroed gradients; return the detached terms of the whole span."""
        assert lifetimes.record is not None
        sums = {name: torch.zeros((), device=index.device) for name in TERMS}

        def step_loss(replay: Replay, start: int, stop: int) -> torch.Tensor:
            terms = targets.step_terms(replay, start, stop)
            for name in TERMS:
                sums[name] = sums[name] + terms[name].detach()
            return terms["loss"]

        batch.optimizer.zero_grad(set_to_none=True)
        record = lifetimes.record.select(index)
        backward_through_lifetimes(agent, record, step_loss, batch.backward, self.config.bptt)
        return sums

    def windowed(
        self, agent: Agent, lifetimes: Lifetimes, advantages: torch.Tensor, returns: torch.Tensor
    ) -> tuple[Lifetimes, torch.Tensor, torch.Tensor, Windows]:
        """Return the collected lifetimes, advantages and returns as windows of
        ``config.window`` steps ``(window, units)``, and the windows' replay; call it before
        any update (the stored states are those of the collecting meta-parameters)."""
        assert lifetimes.record is not None and self.config.window is not None
        window = self.config.window
        windows = split_into_windows(agent, lifetimes.record, window)
        units = Lifetimes(
            rewards=to_windows(lifetimes.rewards, window),
            values=to_windows(lifetimes.values, window),
            log_probs=to_windows(lifetimes.log_probs, window),
            entropies=to_windows(lifetimes.entropies, window),
            alive=to_windows(lifetimes.alive, window, fill=False),
            metrics={},
            record=windows.record,
        )
        windowed = to_windows(advantages, window), to_windows(returns, window)
        return units, *windowed, windows

    def update(
        self, agent: Agent, batch: OuterBatch, terms: dict[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        """Back-propagate ``terms["loss"]`` (``None``: the gradients are already there), clip
        the gradients, take one Adam step (none above ``skip_grad_norm``); return the
        gradients' norms before clipping, ``grad_norm`` and the agent's parts'
        (``Agent.gradient_norms``), and ``skipped_updates`` (1 if no step was taken)."""
        if terms is not None:
            batch.optimizer.zero_grad(set_to_none=True)
            batch.backward(terms["loss"])
        norms = agent.gradient_norms()
        parameters = [p for group in batch.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.max_grad_norm)
        limit = self.config.skip_grad_norm
        skipped = limit is not None and bool(grad_norm > limit)  # one host sync per update
        if skipped:
            batch.optimizer.zero_grad(set_to_none=True)
        else:
            batch.optimizer.step()
        flag = torch.tensor(float(skipped), device=grad_norm.device)
        return {"grad_norm": grad_norm.detach(), "skipped_updates": flag, **norms}

    def training_step(self, agent: Agent, batch: OuterBatch) -> dict[str, torch.Tensor]:
        """Collect one lifetime per task, run the epochs of minibatch updates, return metrics."""
        cfg = self.config
        with torch.no_grad():
            lifetimes = batch.run_lifetimes(agent, record=True)
        advantages, returns = self.advantages(lifetimes)
        units, windows = lifetimes, None  # a unit: a whole lifetime, or a window of one
        if cfg.window is not None:
            units, advantages, returns, windows = self.windowed(
                agent, lifetimes, advantages, returns
            )
        tasks = units.alive.shape[1]
        minibatches = min(cfg.minibatches, tasks)
        device = lifetimes.alive.device
        names = (*TERMS, "grad_norm", "skipped_updates", *GRADIENT_NORM_METRICS.values())
        sums = {name: torch.zeros((), device=device) for name in names}
        updates = 0
        stopped = False
        chunked = cfg.bptt.mode != "full"
        for _ in range(cfg.epochs):
            order = torch.randperm(tasks, generator=batch.generator, device=batch.generator.device)
            for index in order.tensor_split(minibatches):
                index = index.to(device)
                targets = self.minibatch(units, advantages, returns, index)
                if windows is not None:
                    replay = windows.replay(agent, index)
                    terms = targets.step_terms(replay, 0, windows.window)
                elif chunked:
                    terms = self.minibatch_backward(agent, batch, lifetimes, targets, index)
                else:
                    terms = self.minibatch_terms(agent, lifetimes, targets, index)
                if cfg.target_kl is not None:
                    kl = batch.all_reduce(terms["approx_kl"].detach(), op="mean")
                    if bool(kl > cfg.target_kl):  # one host sync per minibatch
                        stopped = True
                        break
                norms = self.update(agent, batch, None if chunked else terms)
                for name, norm in norms.items():
                    sums[name] += norm
                for name in TERMS:
                    sums[name] += terms[name].detach()
                updates += 1
            if stopped:
                break
        metrics = {name: value / max(updates, 1) for name, value in sums.items()}
        metrics["epochs_done"] = torch.tensor(updates / minibatches, device=device)
        metrics["env_steps"] = lifetimes.env_steps.detach().float()
        for name, value in lifetimes.metrics.items():
            if value.dim() == 1:
                metrics[name] = value.detach().nanmean()
        return metrics
