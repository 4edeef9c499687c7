"""The agent: encoder f, a plasticity rule, and a read-out g, stepped one time-step at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, NamedTuple

import gymnasium as gym
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from metods_core.interfaces import PlasticityRule, Readout, State

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "identity": nn.Identity}


class AgentConfig(BaseModel):
    """Shape of the agent around its plasticity rule."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ("value_gradient",)
    """Fields a resume may change: ``value_gradient`` scales a gradient only, never a value."""

    hidden: int = Field(20, gt=0)
    """N: width of the embedding v(0) = f(observation, previous action, previous reward)."""
    encoder_activation: Literal["tanh", "relu", "identity"] = "tanh"
    """Non-linearity applied after the encoder's linear map."""
    value_gradient: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of the value loss's gradient that flows back from the critic into the rule and the
    encoder (1: a shared trunk; 0: the critic reads the rule's output but trains only its own
    head). The value's forward pass is the same either way. An ablation: on cheetah_dir, 0 kept
    the gradient norm at 2-9 but trained worse than 1; on ML1 reach, where the critic gave 99 %
    of the rule's gradient, 0 set on resume stopped two collapses (docs/results.md). A resume
    may change it."""


def action_input_size(action_space: gym.Space) -> int:
    """Return how many numbers encode one previous action (one-hot for discrete spaces)."""
    if isinstance(action_space, gym.spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, gym.spaces.Box):
        return int(gym.spaces.flatdim(action_space))
    raise TypeError(f"unsupported action space {action_space!r}: use Discrete or Box")


def _scale_gradient(tensor: torch.Tensor, share: float) -> torch.Tensor:
    """Return ``tensor`` unchanged in the forward pass, with its gradient multiplied by
    ``share`` in the backward pass (detached when ``share`` is 0)."""
    detached = tensor.detach()
    if share == 0.0:
        return detached
    return detached + share * (tensor - detached)


GRADIENT_NORM_METRICS = {part: f"grad_norm/{part}" for part in ("encoder", "rule", "readout")}
"""The metric name of each agent part's gradient norm (``Agent.gradient_norms``)."""

RULE_DIAGNOSTICS_PREFIX = "rule/"
"""Prefix of the metrics summarising the rule's meta-parameters (``Agent.rule_diagnostics``)."""


class Action(NamedTuple):
    """One step of acting: ``Agent.act``'s result, each ``(batch, ...)``."""

    action: torch.Tensor
    """The read-out's sample ``(batch,)`` or ``(batch, dims)``, detached: what ``log_prob``
    scores and a replay re-scores."""
    env_action: torch.Tensor
    """The action the environment takes, ``readout.env_action(action)``."""
    log_prob: torch.Tensor
    """The sample's log-probability under the policy ``(batch,)``."""
    entropy: torch.Tensor
    """The policy's entropy ``(batch,)``."""
    value: torch.Tensor
    """The critic's estimate ``(batch,)``."""
    encoded_action: torch.Tensor
    """The action as the next step's input, ``(batch, action_size)``."""
    state: State
    """The rule's new state."""


class Evaluation(NamedTuple):
    """Replaying given actions: ``Agent.evaluate_actions``'s result for one step, each
    ``(batch,)``; ``Agent.evaluate_span``'s and ``Agent.evaluate_held``'s for consecutive steps,
    each ``(steps, batch)``."""

    log_prob: torch.Tensor
    """The given action's log-probability under the policy ``(batch,)`` or ``(steps, batch)``."""
    entropy: torch.Tensor
    """The policy's entropy ``(batch,)`` or ``(steps, batch)``."""
    value: torch.Tensor
    """The critic's estimate ``(batch,)`` or ``(steps, batch)``."""
    state: State
    """The rule's state after the (last) step."""


class Agent(nn.Module):
    """Encoder f -> plasticity rule -> read-out g.

    The rule's state is the agent's only memory between steps; it is passed in and out.
    """

    def __init__(
        self,
        config: AgentConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        rule: PlasticityRule,
        readout: Readout,
        boundary_input: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.action_space = action_space
        self.observation_size = int(gym.spaces.flatdim(observation_space))
        self.action_size = action_input_size(action_space)
        self.boundary_input = boundary_input
        in_features = self.observation_size + self.action_size + 1 + int(boundary_input)
        self.encoder = nn.Sequential(
            nn.Linear(in_features, config.hidden), _ACTIVATIONS[config.encoder_activation]()
        )
        self.rule = rule
        self.readout = readout
        self.replay_span = 1
        """Steps per call of a replay (``metods_core.rollout.replay_steps``); set by
        ``compile_step``. 1: one ``evaluate_actions`` call per step."""
        self.compile_options: dict[str, Any] = {}
        """The inductor options ``compile_step`` compiled with (empty before it)."""

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Return optimizer parameter groups of the trainable meta-parameters.

        Parameters share the base rate ``lr`` except those the rule scales through
        ``PlasticityRule.learning_rate_scales``; each distinct rate is one group. Parameters are
        given with their names (``(name, parameter)`` pairs), so the optimizer's state dict
        records them (``param_names``) and a resume that changes the rates can regroup the
        saved moments (``metods_core.training.regroup``).
        """
        scales = {f"rule.{name}": scale for name, scale in self.rule.learning_rate_scales().items()}
        groups: dict[float, list[tuple[str, nn.Parameter]]] = {}
        for name, parameter in self.named_parameters():
            if parameter.requires_grad:
                groups.setdefault(lr * scales.get(name, 1.0), []).append((name, parameter))
        return [{"params": params, "lr": rate} for rate, params in groups.items()]

    def gradient_norms(self) -> dict[str, torch.Tensor]:
        """Return the L2 norm of the current gradients of each part of the agent: the metrics
        ``grad_norm/encoder``, ``grad_norm/rule`` and ``grad_norm/readout`` (0-dim tensors, no
        host sync; 0 for a part without gradients).

        Meta-optimizers log them beside ``grad_norm`` (the global norm they clip), read before
        clipping: they show which part the global norm comes from.
        """
        norms = {}
        for name, metric in GRADIENT_NORM_METRICS.items():
            module: nn.Module = getattr(self, name)
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            norm = (
                nn.utils.get_total_norm(grads)
                if grads
                else torch.zeros((), device=next(self.parameters()).device)
            )
            norms[metric] = norm.detach()
        return norms

    def rule_diagnostics(self) -> dict[str, torch.Tensor]:
        """Return the rule's ``diagnostics()`` as the metrics ``rule/<name>`` (0-dim, detached,
        no host sync), logged by training after every outer step beside ``grad_norm/rule``."""
        return {
            f"{RULE_DIAGNOSTICS_PREFIX}{name}": value.detach()
            for name, value in self.rule.diagnostics().items()
        }

    def init_state(self, batch_size: int) -> State:
        """Return the rule's state at the start of ``batch_size`` lifetimes."""
        return self.rule.init_state(batch_size)

    def encode_action(self, action: torch.Tensor) -> torch.Tensor:
        """Encode actions ``(batch,)`` or ``(batch, dim)`` as ``(batch, action_size)``."""
        if isinstance(self.action_space, gym.spaces.Discrete):
            encoded = nn.functional.one_hot(action.long(), self.action_size)
        else:
            encoded = action.reshape(action.shape[0], -1)
        return encoded.to(self._dtype())

    def _dtype(self) -> torch.dtype:
        first = self.encoder[0]
        assert isinstance(first, nn.Linear)
        return first.weight.dtype

    @property
    def step_is_compiled(self) -> bool:
        """Whether ``compile_step`` replaced ``step`` by its compiled form."""
        return "step" in self.__dict__

    def compile_step(self, replay_span: int = 1, cpp_wrapper: bool = True) -> None:
        """Compile ``step``, ``act`` and ``evaluate_actions``: encoder, rule, read-out (and
        sampling or scoring) in one graph each.

        One compiled call per environment step (and one compiled node in backward) instead of
        the rule alone: the encoder's and read-out's operators fuse with the rule's, and the
        per-call overhead is paid once. The state is explicit, so no buffer is captured.
        For a rule that holds its state after some steps (``PlasticityRule.held_from``),
        ``evaluate_held`` is compiled too.

        Args:
            replay_span: with more than 1, also compile ``evaluate_span`` over this many steps
                and make replays call it (``replay_span``): one call, and one node in
                backward, per ``replay_span`` steps. The graph is unrolled in time, so it takes
                about ``replay_span`` times longer to compile.
            cpp_wrapper: call the compiled kernels from inductor's C++ wrapper rather than its
                Python one: the same kernels and outputs, less time per call. Takes effect on
                the first call of ``compile_step`` (later calls only add ``evaluate_span``).
        """
        if replay_span < 1:
            raise ValueError(f"replay_span must be at least 1, got {replay_span}")
        if not self.step_is_compiled:
            self.compile_options = {"cpp_wrapper": cpp_wrapper}
            self.step = self.compiled(self.step)  # type: ignore[method-assign]
            self.act = self.compiled(self.act)  # type: ignore[method-assign]
            self.evaluate_actions = self.compiled(  # type: ignore[method-assign]
                self.evaluate_actions
            )
            if self.rule.held_from() is not None:
                self.evaluate_held = self.compiled(  # type: ignore[method-assign]
                    self.evaluate_held
                )
        if replay_span > 1 and "evaluate_span" not in self.__dict__:
            self.evaluate_span = self.compiled(self.evaluate_span)  # type: ignore[method-assign]
        self.replay_span = replay_span

    def compiled(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """Return ``function`` under ``torch.compile`` with this agent's ``compile_options``
        (for a meta-optimizer that compiles its own form of the step, as ES's population)."""
        return torch.compile(function, options=dict(self.compile_options))

    def step(
        self,
        observation: torch.Tensor,
        previous_action: torch.Tensor,
        previous_reward: torch.Tensor,
        state: State,
        new_episode: torch.Tensor | None = None,
    ) -> tuple[torch.distributions.Distribution, torch.Tensor, State]:
        """Act once.

        Args:
            observation: ``(batch, *obs_shape)``.
            previous_action: encoded previous action ``(batch, action_size)``.
            previous_reward: ``(batch,)``.
            state: the rule's state.
            new_episode: bool ``(batch,)``, set where ``observation`` starts a new episode of
                the same lifetime; used only by agents built with ``boundary_input``.

        Returns:
            The action distribution, the value estimate ``(batch,)`` and the new state.
        """
        embedding = self._embed(observation, previous_action, previous_reward, new_episode)
        output, state = self.rule.step(embedding, state)
        distribution, value = self._read_out(output)
        return distribution, value, state

    def _embed(
        self,
        observation: torch.Tensor,
        previous_action: torch.Tensor,
        previous_reward: torch.Tensor,
        new_episode: torch.Tensor | None,
    ) -> torch.Tensor:
        """Return the embedding v(0) = f(inputs) ``(batch, hidden)`` of ``step``'s inputs."""
        parts = [
            observation.reshape(observation.shape[0], -1).to(self._dtype()),
            previous_action.to(self._dtype()),
            previous_reward.unsqueeze(-1).to(self._dtype()),
        ]
        if self.boundary_input:
            if new_episode is None:
                new_episode = torch.zeros(observation.shape[0], device=observation.device)
            parts.append(new_episode.unsqueeze(-1).to(self._dtype()))
        return self.encoder(torch.cat(parts, dim=-1))

    def _read_out(
        self, output: torch.Tensor
    ) -> tuple[torch.distributions.Distribution, torch.Tensor]:
        """Return the action distribution and the value ``(batch,)`` read from the rule's
        ``output`` ``(batch, output_size)`` (the value's gradient scaled by ``value_gradient``)."""
        distribution, value = self.readout(output)
        share = self.config.value_gradient
        if share < 1.0:
            _, value = self.readout(_scale_gradient(output, share))
        return distribution, value

    def act(
        self,
        observation: torch.Tensor,
        previous_action: torch.Tensor,
        previous_reward: torch.Tensor,
        state: State,
        new_episode: torch.Tensor,
        noise: torch.Tensor,
    ) -> Action:
        """Step, then sample an action from the read-out's ``noise`` and score it.

        ``step``'s arguments, and ``noise``: one step of ``readout.draw_noise``. What a
        rollout does at every step, in one call (one compiled graph under ``compile_step``).
        """
        distribution, value, state = Agent.step(
            self, observation, previous_action, previous_reward, state, new_episode
        )
        action = self.readout.sample_from_noise(distribution, noise)
        env_action = self.readout.env_action(action)
        return Action(
            action=action,
            env_action=env_action,
            log_prob=distribution.log_prob(action),
            entropy=distribution.entropy(),
            value=value,
            encoded_action=self.encode_action(env_action),
            state=state,
        )

    def evaluate_actions(
        self,
        observation: torch.Tensor,
        previous_action: torch.Tensor,
        previous_reward: torch.Tensor,
        state: State,
        new_episode: torch.Tensor,
        action: torch.Tensor,
    ) -> Evaluation:
        """Step, then score the given ``action`` (a recorded read-out sample): what a replay does
        at every step (PPO's ratio), in one call (one compiled graph under ``compile_step``).

        ``step``'s arguments, and ``action`` ``(batch,)`` or ``(batch, dims)``.
        """
        distribution, value, state = Agent.step(
            self, observation, previous_action, previous_reward, state, new_episode
        )
        return Evaluation(
            log_prob=distribution.log_prob(action),
            entropy=distribution.entropy(),
            value=value,
            state=state,
        )

    def evaluate_span(
        self,
        observations: torch.Tensor,
        previous_actions: torch.Tensor,
        previous_rewards: torch.Tensor,
        state: State,
        new_episode: torch.Tensor,
        actions: torch.Tensor,
    ) -> Evaluation:
        """``evaluate_actions`` over consecutive steps, in one call (one compiled graph, unrolled
        in time, under ``compile_step(replay_span=steps)``).

        Each argument but ``state`` is ``evaluate_actions``'s with a leading ``steps`` axis:
        ``observations`` ``(steps, batch, *obs_shape)``, ``previous_actions``
        ``(steps, batch, action_size)``, ``previous_rewards`` and ``new_episode``
        ``(steps, batch)``, ``actions`` ``(steps, batch)`` or ``(steps, batch, dims)``.

        Returns:
            log-probabilities, entropies and values ``(steps, batch)``, and the state after
            the last step.
        """
        log_probs, entropies, values = [], [], []
        for t in range(observations.shape[0]):
            scored = Agent.evaluate_actions(
                self,
                observations[t],
                previous_actions[t],
                previous_rewards[t],
                state,
                new_episode[t],
                actions[t],
            )
            state = scored.state
            log_probs.append(scored.log_prob)
            entropies.append(scored.entropy)
            values.append(scored.value)
        return Evaluation(
            log_prob=torch.stack(log_probs),
            entropy=torch.stack(entropies),
            value=torch.stack(values),
            state=state,
        )

    def evaluate_held(
        self,
        observations: torch.Tensor,
        previous_actions: torch.Tensor,
        previous_rewards: torch.Tensor,
        state: State,
        new_episode: torch.Tensor,
        actions: torch.Tensor,
    ) -> Evaluation:
        """``evaluate_span`` over steps in which the rule holds its state (from
        ``rule.held_from()`` steps of the lifetime on): every step reads the same state, so all
        of them are computed at once, as one batch of ``steps * batch`` (``rule.step_held``).

        ``evaluate_span``'s arguments and result: the same outputs (up to the order of
        floating-point sums) in one call instead of ``steps`` sequential ones, and one node in
        backward (under ``compile_step``, one compiled graph).
        """
        steps, batch = previous_rewards.shape

        def flat(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.reshape(steps * batch, *tensor.shape[2:])

        embedding = self._embed(
            flat(observations), flat(previous_actions), flat(previous_rewards), flat(new_episode)
        )
        output, state = self.rule.step_held(embedding.view(steps, batch, -1), state)
        distribution, value = self._read_out(output.reshape(steps * batch, -1))
        return Evaluation(
            log_prob=distribution.log_prob(flat(actions)).view(steps, batch),
            entropy=distribution.entropy().view(steps, batch),
            value=value.view(steps, batch),
            state=state,
        )
