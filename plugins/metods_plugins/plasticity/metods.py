"""MetODS: the recursive read/write rule of Chalvidal, VanRullen & Serre (NeurIPS 2022).

Implements Algorithm 1 of the paper. At every environment step, starting from
v(0) = x and W(0) = W_{t-1}, for s = 1..S::

    v(s) = sum_{l<s} kappa_s^l v(l) + kappa_s^s sigma(W(s-1) v(s-1))                 # read
    W(s) = sum_{l<s} beta_s^l  W(l) + beta_s^s  alpha * (v(s-1) outer post(v(s-1)))   # write

and the layer outputs v(S) and keeps W_t = W(S). ``post`` is the identity (vanilla write), a
learned projection P (linear write) or a small MLP (mlp write).

Initialisation and step sizes (our choices; the paper gives none), made so that S = 4 trains
at least as well as S = 1 (measured on Harlow, see docs/results.md):

- s = 1: kappa_1 = (1, 1) and beta_1 = (decay_init, write_rate_init), a Hebbian rule that
  writes the input embedding v(0) and reads the memory on top of it.
- s >= 2: kappa_s^{s-1} = 1 and beta_s^1 = 1 carry v(s-1) and W(1) forward; kappa_s^s and
  beta_s^s start at ``deep_init`` (0 by default) and every other coefficient at 0. With
  deep_init = 0 a deep rule computes exactly the S = 1 rule at initialisation, and the extra
  recursions grow from there. Carrying W(1) rather than chaining W(s-1) keeps one decay knob
  on the memory instead of S multiplied ones; writing v(0) rather than v(s-1) keeps the
  memory's content the input, not its own echo (measured: both alternatives stall).
- The coefficients of s >= 2 learn at ``deep_lr_scale`` (1/S) times the optimizer's rate,
  see ``learning_rate_scales``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from metods_core import ComponentConfig, PlasticityRule

_SIGMAS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": None}


class MetODSRule(PlasticityRule):
    """MetODS self-modifying synapses: a learned recursive read/write rule on W (N x N)."""

    class Config(ComponentConfig):
        """Parameters of the MetODS rule."""

        RESUMABLE_FIELDS = ("deep_lr_scale", "coefficient_lr_scale", "projection_lr_scale")

        recursion_steps: int = Field(4, ge=1, le=16)
        """S: read/write recursions per environment step."""
        alpha: Literal["elementwise", "scalar", "none"] = "elementwise"
        """Plasticity coefficients: one per synapse, one for the layer, or none (ablation)."""
        write: Literal["vanilla", "linear", "mlp"] = "vanilla"
        """Write form: alpha*(v v^T), alpha*(v (P v)^T) or alpha*(v MLP(v)^T)."""
        sigma: Literal["tanh", "relu", "sigmoid", "identity"] = "tanh"
        """Non-linearity of the read, sigma(W v)."""
        initial_weights: Literal["learned", "zeros", "random"] = "learned"
        """W_0: learned (starts at zero), zeros (fixed), random (drawn once, fixed)."""
        learn_kappa: bool = True
        """Meta-learn the read coefficients kappa (False keeps them at their initial values)."""
        learn_beta: bool = True
        """Meta-learn the write coefficients beta (False keeps them at their initial values)."""
        decay_init: float = 0.95
        """Initial beta_1^0: how much of W_{t-1} is kept at each environment step."""
        write_rate_init: float = 0.5
        """Initial beta_1^1: the rate of the Hebbian write of v(0)."""
        deep_init: float = 0.0
        """Initial kappa_s^s and beta_s^s for s >= 2 (0: the rule starts as the S = 1 rule)."""
        deep_lr_scale: float | None = Field(None, gt=0)
        """Learning-rate multiplier of kappa_s and beta_s for s >= 2; None means 1/S."""
        coefficient_lr_scale: float = Field(1.0, gt=0)
        """Learning-rate multiplier of every kappa_s and beta_s (times ``deep_lr_scale`` for
        s >= 2): below 1 slows the rule's read gains and decay, which ran away before an A2C
        collapse on cheetah_dir (docs/results.md); 0.1 also slowed early learning there."""
        projection_lr_scale: float = Field(1.0, gt=0)
        """Learning-rate multiplier of the write's projection P (``write: linear`` or ``mlp``).
        In ML1 reach's collapses P moved most of the rule's tensors (docs/results.md)."""
        mlp_hidden: int = Field(32, gt=0)
        """Hidden width of the MLP used by the mlp write."""
        write_steps: int | None = Field(None, ge=1)
        """Write W only in the first ``write_steps`` environment steps of a lifetime and hold it
        after them (the S read/write recursions of every step still run from the held W). None:
        write at every step, Algorithm 1. Motivated by the memory lesion on cheetah_dir, where
        the writes after step 20 tipped the robot over under a disabled actuator
        (docs/results.md); the state is then ``(W, steps)``."""

    def __init__(self, config: Config, input_size: int) -> None:
        super().__init__()
        self.config = config
        self.size = input_size
        self.output_size = input_size
        steps = config.recursion_steps
        kappa, beta = [], []
        for s in range(1, steps + 1):
            k = torch.zeros(s + 1)
            b = torch.zeros(s + 1)
            if s == 1:
                k[0], k[1] = 1.0, 1.0  # v(1) = v(0) + sigma(W(0) v(0))
                b[0], b[1] = config.decay_init, config.write_rate_init  # Hebbian write of v(0)
            else:
                k[s - 1], k[s] = 1.0, config.deep_init  # v(s) = v(s-1) + deep_init * read
                b[1], b[s] = 1.0, config.deep_init  # W(s) = W(1) + deep_init * write
            kappa.append(nn.Parameter(k, requires_grad=config.learn_kappa))
            beta.append(nn.Parameter(b, requires_grad=config.learn_beta))
        self.kappa = nn.ParameterList(kappa)
        self.beta = nn.ParameterList(beta)
        n = input_size
        self.alpha: nn.Parameter | None
        if config.alpha == "elementwise":
            self.alpha = nn.Parameter(torch.ones(n, n))
        elif config.alpha == "scalar":
            self.alpha = nn.Parameter(torch.ones(1))
        else:
            self.alpha = None
        self.projection: nn.Module | None
        if config.write == "linear":
            self.projection = nn.Linear(n, n, bias=False)
            nn.init.eye_(self.projection.weight)
        elif config.write == "mlp":
            self.projection = nn.Sequential(
                nn.Linear(n, config.mlp_hidden), nn.Tanh(), nn.Linear(config.mlp_hidden, n)
            )
        else:
            self.projection = None
        initial = torch.zeros(n, n)
        if config.initial_weights == "random":
            generator = torch.Generator().manual_seed(0)
            initial = torch.randn(n, n, generator=generator) / n**0.5
        if config.initial_weights == "learned":
            self.initial_weights = nn.Parameter(initial)
        else:
            self.register_buffer("initial_weights", initial)
        self._sigma = _SIGMAS[config.sigma]

    def learning_rate_scales(self) -> dict[str, float]:
        """Slow down the coefficients of the recursion steps s >= 2 (1/S by default), and
        every coefficient or the write's projection by their multipliers.

        At S > 1 several coefficients reach the same synapses (W(S) mixes W(0)..W(S-1), all
        close to W(0)), so at the full rate the memory's effective decay drifts about S times
        faster than at S = 1: measured on Harlow, S = 4 stalled at the fixation-only score for
        800 outer steps at the full rate, and learned within 400 at rate 1/4, like S = 1.
        """
        steps = self.config.recursion_steps
        scale = self.config.deep_lr_scale or 1.0 / steps
        coefficient = self.config.coefficient_lr_scale
        names = [f"{family}.{s - 1}" for family in ("kappa", "beta") for s in range(2, steps + 1)]
        scales = dict.fromkeys(names, scale * coefficient)
        if coefficient != 1.0:
            scales.update(dict.fromkeys(["kappa.0", "beta.0"], coefficient))
        if self.projection is not None and self.config.projection_lr_scale != 1.0:
            scales.update(
                (f"projection.{name}", self.config.projection_lr_scale)
                for name, _ in self.projection.named_parameters()
            )
        return scales

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Return the rule's memory in three numbers (logged as ``train/rule/<name>``).

        - ``memory_decay``: c_S, the factor on W_{t-1} in W_t (``_composition``); alpha aside,
          a write fades to half in ln(1/2) / ln(c_S) environment steps.
        - ``write_rate``: d_S[1], the weight of the write of the input embedding v(0) in W_t.
        - ``read_gain``: kappa_1^1, the gain of the first read sigma(W_{t-1} v(0)).
        """
        with torch.no_grad():
            final = self._composition()[self.config.recursion_steps]
            return {
                "memory_decay": final[0].clone(),
                "write_rate": final[1].clone(),
                "read_gain": self.kappa[0][1].clone(),
            }

    def init_state(self, batch_size: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Return W_0 for every task: ``(batch, N, N)``; with ``write_steps``, also the steps
        taken, ``(batch,)`` zeros (in W's dtype, so that the state follows the module's).

        A contiguous copy, not an expanded view: every later W_t is contiguous, and a compiled
        step would otherwise be compiled twice (its guards check strides).
        """
        weights = self.initial_weights.unsqueeze(0).repeat(batch_size, 1, 1)
        if self.config.write_steps is None:
            return weights
        return weights, weights.new_zeros(batch_size)

    def step(
        self, x: torch.Tensor, state: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """One environment step: :meth:`_step` on W; with ``write_steps`` the new W is kept only
        for the lifetimes that have taken fewer than ``write_steps`` steps, the others keep
        theirs (``torch.where``: no host synchronisation)."""
        if self.config.write_steps is None:
            return self._step(x, state)  # type: ignore[arg-type]
        weights, taken = state
        y, written = self._step(x, weights)
        writing = (taken < self.config.write_steps)[:, None, None]
        return y, (torch.where(writing, written, weights), taken + 1)

    def _step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run S read/write recursions on ``x`` ``(batch, N)`` and W ``(batch, N, N)``.

        Computes Algorithm 1 (see the module docstring) without materialising the
        intermediate matrices W(1)..W(S-1). Every W(s) is a linear combination
        ``c_s W(0) + sum_{j<=s} d_s[j] A_j`` of the step's input W(0) and of the writes
        ``A_j = alpha * (v(j-1) post(v(j-1))^T)`` (``_composition``), and a write acts on a
        vector without being formed: ``A_j u = v(j-1) * (alpha (post(v(j-1)) * u))``. So each
        recursion costs one read of W(0) and matrix products with the shared alpha, and only
        W(S) is built, by one batched product of the S writes. Per environment step this saves
        O(S) instead of O(S^2) ``(batch, N, N)`` tensors for backward.
        """
        steps = self.config.recursion_steps
        if steps == 1:  # nothing to fuse: Algorithm 1 directly, in fewer operators
            return self._one_recursion(x, state)
        composition = self._composition()  # (S + 1, S + 1): row s is [c_s, d_s[1..S]]
        output, pre, post = self._recursions(x, lambda v: _read(state, v), composition, True)
        final = composition[steps]
        written = _sum_of_outer_products(pre, post, final[1:])
        return output, final[0] * state + self._gate(written)

    def held_from(self) -> int | None:
        """Return ``write_steps``: from then on W is held (None when it is written at every
        step)."""
        return self.config.write_steps

    def step_held(
        self, x: torch.Tensor, state: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """Run ``steps`` environment steps past ``write_steps`` at once: x ``(steps, batch, N)``
        -> outputs ``(steps, batch, N)``, and the state ``(W, steps taken + steps)``.

        Each step runs its S recursions from the held W (as ``step`` does), so the steps are
        independent given W: every read ``W u`` is one matrix product per task over all the
        steps, ``(batch, steps, N) x (batch, N, N)``, and the write of W(S), which ``step``
        computes and then drops, is not computed.
        """
        if self.config.write_steps is None:
            raise ValueError("step_held needs write_steps: without it W changes at every step")
        weights, taken = state
        steps, batch, size = x.shape

        def read(v: torch.Tensor) -> torch.Tensor:  # (steps * batch, N) -> W v per task
            per_task = v.view(steps, batch, size).transpose(0, 1)  # (batch, steps, N)
            product = torch.bmm(per_task, weights.transpose(1, 2))  # rows: (W v)^T
            return product.transpose(0, 1).reshape(steps * batch, size)

        output, _, _ = self._recursions(
            x.reshape(steps * batch, size), read, self._composition(), False
        )
        return output.view(steps, batch, size), (weights, taken + steps)

    def _recursions(
        self,
        x: torch.Tensor,
        read_weights: Callable[[torch.Tensor], torch.Tensor],
        composition: torch.Tensor,
        last_write: bool,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run the S reads of one step on ``x`` ``(batch, N)``; ``read_weights(u)`` is W(0) u.

        Returns v(S) ``(batch, N)`` and the two sides of the writes A_1..A_S, ``(batch, N)``
        each (without A_S's when not ``last_write``: only W(S) needs it).
        """
        steps = self.config.recursion_steps
        activations = [x]  # v(0), ..., v(s)
        writes_pre: list[torch.Tensor] = []  # v(j-1) of each write A_j, (batch, N)
        writes_post: list[torch.Tensor] = []  # post(v(j-1)) of each write A_j, (batch, N)
        for s in range(1, steps + 1):
            v_prev = activations[-1]
            coefficients = composition[s - 1]
            read = coefficients[0] * read_weights(v_prev)
            if s > 1:  # the writes A_1..A_{s-1} in W(s-1), all applied to v(s-1) at once
                read = read + self._apply_writes(
                    torch.stack(writes_pre), torch.stack(writes_post), coefficients[1:s], v_prev
                )
            if self._sigma is not None:
                read = self._sigma(read)
            kappa = self.kappa[s - 1]
            stacked = torch.stack(activations)  # (s, batch, N)
            v_new = torch.tensordot(kappa[:s], stacked, dims=1) + kappa[s] * read
            if s < steps or last_write:
                writes_pre.append(v_prev)
                writes_post.append(self._post(v_prev))
            activations.append(v_new)
        return activations[-1], writes_pre, writes_post

    def _one_recursion(
        self, x: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Algorithm 1 at S = 1: ``v(1) = k0 x + k1 sigma(W x)``, ``W(1) = b0 W + b1 A_1``."""
        kappa, beta = self.kappa[0], self.beta[0]
        read = _read(state, x)
        if self._sigma is not None:
            read = self._sigma(read)
        written = x.unsqueeze(-1) * self._post(x).unsqueeze(-2)  # (batch, N, N)
        return kappa[0] * x + kappa[1] * read, beta[0] * state + beta[1] * self._gate(written)

    def _post(self, v: torch.Tensor) -> torch.Tensor:
        """Return the write's post-synaptic side ``post(v)`` ``(batch, N)``: ``v``, ``P v``
        or ``MLP(v)`` (``Config.write``)."""
        return v if self.projection is None else self.projection(v)

    def _gate(self, written: torch.Tensor) -> torch.Tensor:
        """Return ``alpha * written`` for outer products ``written`` ``(batch, N, N)``."""
        return written if self.alpha is None else self.alpha * written

    def _composition(self) -> torch.Tensor:
        """Return ``(S + 1, S + 1)`` coefficients expressing each W(s) in W(0) and the writes.

        Row ``s`` is ``[c_s, d_s[1], ..., d_s[S]]`` with ``W(s) = c_s W(0) + sum_j d_s[j] A_j``
        (zero beyond ``j = s``), from the write recursion
        ``W(s) = sum_{l<s} beta_s^l W(l) + beta_s^s A_s``.
        """
        steps = self.config.recursion_steps
        reference = self.beta[0]
        unit = torch.eye(steps + 1, dtype=reference.dtype, device=reference.device)
        rows = [unit[0]]  # W(0) = W(0)
        for s in range(1, steps + 1):
            beta = self.beta[s - 1]
            rows.append(beta[:s] @ torch.stack(rows) + beta[s] * unit[s])
        return torch.stack(rows)

    def _apply_writes(
        self, pre: torch.Tensor, post: torch.Tensor, scales: torch.Tensor, u: torch.Tensor
    ) -> torch.Tensor:
        """Return ``sum_j scales[j] A_j u`` for the writes ``A_j = alpha * (pre_j post_j^T)``,
        without forming any A_j: ``A_j u = pre_j * (alpha (post_j * u))``.

        Args:
            pre, post: ``(J, batch, N)``; scales: ``(J,)``; u: ``(batch, N)``.

        Returns:
            ``(batch, N)``.
        """
        projected = post * u  # (J, batch, N)
        if self.alpha is None or self.alpha.numel() == 1:
            applied = projected.sum(-1, keepdim=True)  # post_j . u
            if self.alpha is not None:
                applied = self.alpha * applied
        else:  # one matrix product for all J writes
            applied = (projected.reshape(-1, self.size) @ self.alpha.t()).view(projected.shape)
        return (scales[:, None, None] * pre * applied).sum(0)


def _sum_of_outer_products(
    pre: list[torch.Tensor], post: list[torch.Tensor], scales: torch.Tensor
) -> torch.Tensor:
    """Return ``sum_j scales[j] pre_j post_j^T``: the S writes of a step in one matrix.

    Args:
        pre, post: S tensors ``(batch, N)`` each; scales: ``(S,)``.

    Returns:
        ``(batch, N, N)``.

    Eager, one ``bmm`` of inner size S. Under ``torch.compile``, a sum of broadcast outer
    products instead: it is pointwise, so the compiler fuses it with the decay and alpha into
    one pass over W (and likewise in backward), where a ``bmm`` stays an external call with
    its own passes. Measured (docs/results.md, "the write fused into the compiled step"): the
    replay of a cheetah lifetime at 128 tasks costs 0.55x; eager, the broadcast form was
    1.25-1.4x slower than the ``bmm`` (the rule alone, N = 64, S = 2).
    """
    if torch.compiler.is_compiling():
        written = (scales[0] * pre[0]).unsqueeze(-1) * post[0].unsqueeze(-2)
        for j in range(1, len(pre)):  # chained adds, not a stack: nothing materialised
            written = written + (scales[j] * pre[j]).unsqueeze(-1) * post[j].unsqueeze(-2)
        return written
    scaled = torch.stack(pre, dim=-1) * scales  # (batch, N, S)
    return torch.bmm(scaled, torch.stack(post, dim=-2))  # (batch, N, S) x (batch, S, N)


def _read(weights: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Return ``weights @ vector`` per task: ``(batch, N, N) x (batch, N) -> (batch, N)``.

    A broadcast multiply-and-sum: on this torch build's CPU kernels the batched
    matrix x column-vector ``bmm`` is a slow path (measured in docs/results.md).
    """
    return (weights * vector.unsqueeze(-2)).sum(-1)
