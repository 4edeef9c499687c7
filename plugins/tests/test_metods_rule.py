"""The MetODS rule against Algorithm 1 of the paper: test vectors, variants and reductions.

Every tensor here is float64: the test vectors are float64 and are matched to 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from metods_plugins.plasticity.metods import MetODSRule

from metods_core.testing import check_plasticity_rule

F64 = torch.float64
DATA = Path(__file__).resolve().parent / "data" / "metods_test_vectors.json"
SHARED = (
    Path(__file__).resolve().parents[2].parent / "shared" / "paper" / "metods_test_vectors.json"
)
VECTORS_FILE = DATA if DATA.exists() else SHARED
VECTORS: dict[str, Any] = json.loads(VECTORS_FILE.read_text())
CASES: list[dict[str, Any]] = VECTORS["cases"]


def tensor(values: Any) -> torch.Tensor:
    """Return ``values`` as a float64 tensor."""
    return torch.as_tensor(values, dtype=F64)


def build(n: int = 5, **config: Any) -> MetODSRule:
    """Build a float64 MetODS rule of width ``n``."""
    return MetODSRule(MetODSRule.Config(**config), n).to(F64)


def set_coefficients(
    rule: MetODSRule,
    kappa: list[list[float]],
    beta: list[list[float]],
    alpha: Any = None,
    projection: Any = None,
) -> None:
    """Overwrite the rule's kappa, beta, alpha and P with given values."""
    with torch.no_grad():
        for s, (k, b) in enumerate(zip(kappa, beta, strict=True)):
            rule.kappa[s].copy_(tensor(k))
            rule.beta[s].copy_(tensor(b))
        if alpha is not None:
            assert rule.alpha is not None
            rule.alpha.copy_(tensor(alpha))
        if projection is not None:
            assert isinstance(rule.projection, torch.nn.Linear)
            rule.projection.weight.copy_(tensor(projection))  # nn.Linear computes P v


def random_coefficients(steps: int, seed: int = 0) -> tuple[list[list[float]], list[list[float]]]:
    """Return random kappa and beta lists (``s + 1`` scalars for recursion step ``s``)."""
    generator = torch.Generator().manual_seed(seed)
    kappa = [
        torch.rand(s + 1, generator=generator, dtype=F64).tolist() for s in range(1, steps + 1)
    ]
    beta = [torch.rand(s + 1, generator=generator, dtype=F64).tolist() for s in range(1, steps + 1)]
    return kappa, beta


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    """Return a float64 standard normal tensor of ``shape``."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def case_id(case: dict[str, Any]) -> str:
    """Name a test-vector case by its S, write form and alpha mode."""
    return f"S{case['S']}-{case['write']}-{case['alpha_mode']}-{case['sigma']}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(case) for case in CASES])
def test_reproduces_test_vectors(case: dict[str, Any]) -> None:
    """Algorithm 1: three steps from W_prev give every expected v(S) and W(S) to 1e-6."""
    rule = build(
        case["N"],
        recursion_steps=case["S"],
        write=case["write"],
        alpha=case["alpha_mode"],
        sigma=case["sigma"],
        initial_weights="zeros",
    )
    set_coefficients(rule, case["kappa"], case["beta"], case["alpha"], case["P"])
    weights = tensor(case["W_prev"])
    for t, (v0, expected) in enumerate(zip(case["v0_sequence"], case["expected"], strict=True)):
        v_s, weights = rule.step(tensor(v0), weights)
        assert v_s.dtype == F64 and weights.dtype == F64
        for name, got in (("v_S", v_s), ("W_S", weights)):
            torch.testing.assert_close(
                got,
                tensor(expected[name]),
                rtol=0,
                atol=1e-6,
                msg=lambda m, name=name, t=t: f"{name}, step {t}: {m}",
            )


def test_bundled_vectors_match_shared_copy() -> None:
    """The repository's copy of the test vectors is the paper folder's file, unchanged."""
    if not SHARED.exists():
        pytest.skip(f"no shared paper folder at {SHARED}")
    assert json.loads(DATA.read_text()) == json.loads(SHARED.read_text())


def test_coefficient_counts() -> None:
    """There are S(S+3)/2 kappa and S(S+3)/2 beta scalars, s + 1 at recursion step s."""
    for steps in (1, 2, 4):
        rule = build(recursion_steps=steps)
        assert [k.numel() for k in rule.kappa] == [s + 1 for s in range(1, steps + 1)]
        assert sum(k.numel() for k in rule.kappa) == steps * (steps + 3) // 2
        assert sum(b.numel() for b in rule.beta) == steps * (steps + 3) // 2


def test_one_recursion_is_the_hebbian_rule() -> None:
    """S = 1: W_t = beta_1^0 W_{t-1} + beta_1^1 alpha * v(0)v(0)^T and
    v(1) = kappa_1^0 v(0) + kappa_1^1 tanh(W_{t-1} v(0))."""
    rule = build(recursion_steps=1)
    (k0, k1), (b0, b1) = tensor([0.7, 1.3]), tensor([0.9, 0.4])
    alpha = randn(5, 5, seed=2).abs()
    set_coefficients(rule, [[0.7, 1.3]], [[0.9, 0.4]], alpha)
    weights, v0 = randn(2, 5, 5, seed=3), randn(2, 5, seed=4)
    v1, new_weights = rule.step(v0, weights)
    hebb = torch.einsum("bi,bj->bij", v0, v0)
    torch.testing.assert_close(new_weights, b0 * weights + b1 * alpha * hebb, rtol=0, atol=1e-12)
    read = torch.tanh(torch.einsum("bij,bj->bi", weights, v0))
    torch.testing.assert_close(v1, k0 * v0 + k1 * read, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("mode", "shape"), [("elementwise", (5, 5)), ("scalar", (1,)), ("none", None)]
)
def test_alpha_modes(mode: str, shape: tuple[int, ...] | None) -> None:
    """alpha is one coefficient per synapse, one for the layer, or absent; it starts at 1."""
    rule = build(alpha=mode)
    if shape is None:
        assert rule.alpha is None
        assert not any("alpha" in name for name, _ in rule.named_parameters())
    else:
        assert isinstance(rule.alpha, torch.nn.Parameter) and rule.alpha.shape == shape
        assert torch.equal(rule.alpha, torch.ones(shape, dtype=F64))


@pytest.mark.parametrize("mode", ["scalar", "none"])
def test_alpha_modes_scale_the_write(mode: str) -> None:
    """A scalar alpha scales the outer product; without alpha it is the plain outer product."""
    rule = build(recursion_steps=1, alpha=mode)
    set_coefficients(rule, [[1.0, 1.0]], [[0.5, 0.8]], [2.5] if mode == "scalar" else None)
    weights, v0 = randn(2, 5, 5, seed=3), randn(2, 5, seed=4)
    _, new_weights = rule.step(v0, weights)
    scale = 2.5 if mode == "scalar" else 1.0
    expected = 0.5 * weights + 0.8 * scale * torch.einsum("bi,bj->bij", v0, v0)
    torch.testing.assert_close(new_weights, expected, rtol=0, atol=1e-12)


def test_linear_write_uses_projection() -> None:
    """The linear write is alpha * (v (P v)^T), and P starts at the identity (= vanilla)."""
    weights, v0 = randn(2, 5, 5, seed=3), randn(2, 5, seed=4)
    torch.manual_seed(0)
    vanilla = build(write="vanilla")
    torch.manual_seed(0)
    linear = build(write="linear")
    for a, b in zip(vanilla.step(v0, weights), linear.step(v0, weights), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    projection = randn(5, 5, seed=5)
    rule = build(recursion_steps=1, write="linear")
    set_coefficients(rule, [[1.0, 1.0]], [[0.5, 0.8]], projection=projection)
    _, new_weights = rule.step(v0, weights)
    post = v0 @ projection.T
    expected = 0.5 * weights + 0.8 * torch.einsum("bi,bj->bij", v0, post)
    torch.testing.assert_close(new_weights, expected, rtol=0, atol=1e-12)


def test_mlp_write_uses_mlp() -> None:
    """The mlp write is alpha * (v MLP(v)^T), the MLP of width ``mlp_hidden``."""
    rule = build(recursion_steps=1, write="mlp", mlp_hidden=7)
    assert rule.projection is not None
    assert rule.projection[0].out_features == 7
    set_coefficients(rule, [[1.0, 1.0]], [[0.5, 0.8]])
    weights, v0 = randn(2, 5, 5, seed=3), randn(2, 5, seed=4)
    _, new_weights = rule.step(v0, weights)
    with torch.no_grad():
        post = rule.projection(v0)
    expected = 0.5 * weights + 0.8 * torch.einsum("bi,bj->bij", v0, post)
    torch.testing.assert_close(new_weights, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("sigma", "fn"),
    [("relu", torch.relu), ("sigmoid", torch.sigmoid), ("identity", lambda x: x)],
)
def test_read_nonlinearity(sigma: str, fn: Any) -> None:
    """The read is sigma(W v) with the configured sigma."""
    rule = build(recursion_steps=1, sigma=sigma)
    set_coefficients(rule, [[0.3, 1.2]], [[1.0, 1.0]])
    weights, v0 = randn(2, 5, 5, seed=3), randn(2, 5, seed=4)
    v1, _ = rule.step(v0, weights)
    expected = 0.3 * v0 + 1.2 * fn(torch.einsum("bij,bj->bi", weights, v0))
    torch.testing.assert_close(v1, expected, rtol=0, atol=1e-12)


def test_initial_weights_learned() -> None:
    """learned W_0 is a parameter that starts at zero and is the state of every task."""
    rule = build(initial_weights="learned")
    assert isinstance(rule.initial_weights, torch.nn.Parameter)
    assert torch.equal(rule.initial_weights, torch.zeros(5, 5, dtype=F64))
    with torch.no_grad():
        rule.initial_weights.copy_(randn(5, 5))
    state = rule.init_state(3)
    assert state.shape == (3, 5, 5)
    assert all(torch.equal(w, rule.initial_weights) for w in state)


def test_initial_weights_zeros_is_fixed() -> None:
    """zeros W_0 is a zero buffer, not a meta-parameter."""
    rule = build(initial_weights="zeros")
    assert "initial_weights" not in dict(rule.named_parameters())
    assert torch.equal(rule.init_state(2), torch.zeros(2, 5, 5, dtype=F64))


def test_initial_weights_random_is_drawn_once() -> None:
    """random W_0 is a fixed non-zero buffer, the same whatever the global seed."""
    torch.manual_seed(1)
    first = build(initial_weights="random")
    torch.manual_seed(2)
    second = build(initial_weights="random")
    assert "initial_weights" not in dict(first.named_parameters())
    assert first.initial_weights.abs().sum() > 0
    assert torch.equal(first.init_state(2), second.init_state(2))


def _gradients(rule: MetODSRule) -> None:
    weights = rule.init_state(2)
    total = torch.zeros((), dtype=F64)
    for t in range(3):
        v, weights = rule.step(randn(2, 5, seed=t), weights)
        total = total + v.sum()
    total.backward()


@pytest.mark.parametrize("frozen", ["kappa", "beta"])
def test_frozen_coefficients_get_no_gradient(frozen: str) -> None:
    """learn_kappa / learn_beta = False keeps those coefficients fixed; the others learn."""
    rule = build(recursion_steps=2, **{f"learn_{frozen}": False})
    learned = "beta" if frozen == "kappa" else "kappa"
    _gradients(rule)
    for coefficient in getattr(rule, frozen):
        assert not coefficient.requires_grad and coefficient.grad is None
    for coefficient in getattr(rule, learned):
        assert coefficient.requires_grad and coefficient.grad is not None
    assert rule.alpha is not None and rule.alpha.grad is not None


def test_initial_coefficients() -> None:
    """beta_1 = (decay_init, write_rate_init), kappa_1 = (1, 1); deeper steps carry v(s-1) and
    W(1) with weight 1 and start their own read and write at deep_init."""
    rule = build(recursion_steps=3, decay_init=0.8, write_rate_init=0.3, deep_init=0.05)
    assert rule.kappa[0].tolist() == [1.0, 1.0]
    assert rule.beta[0].tolist() == pytest.approx([0.8, 0.3])
    assert rule.kappa[2].tolist() == pytest.approx([0.0, 0.0, 1.0, 0.05])
    assert rule.beta[2].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.05])


def test_deep_rule_starts_as_the_shallow_rule() -> None:
    """With the default deep_init = 0, S = 4 computes exactly the S = 1 rule over a lifetime."""
    torch.manual_seed(0)
    shallow = build(recursion_steps=1)
    torch.manual_seed(0)
    deep = build(recursion_steps=4)
    weights_shallow = weights_deep = randn(2, 5, 5, seed=3)
    for t in range(5):
        v0 = randn(2, 5, seed=10 + t)
        out_shallow, weights_shallow = shallow.step(v0, weights_shallow)
        out_deep, weights_deep = deep.step(v0, weights_deep)
        torch.testing.assert_close(out_shallow, out_deep, rtol=0, atol=1e-12)
        torch.testing.assert_close(weights_shallow, weights_deep, rtol=0, atol=1e-12)


def test_deep_coefficients_learn_at_a_scaled_rate() -> None:
    """Coefficients of s >= 2 get rate 1/S by default (deep_lr_scale), the rest full rate."""
    rule = build(recursion_steps=4)
    scales = rule.learning_rate_scales()
    assert set(scales) == {f"{f}.{i}" for f in ("kappa", "beta") for i in (1, 2, 3)}
    assert set(scales.values()) == {0.25}
    names = {name for name, _ in rule.named_parameters()}
    assert set(scales) <= names
    assert build(recursion_steps=2, deep_lr_scale=0.1).learning_rate_scales()["beta.1"] == 0.1
    assert build(recursion_steps=1).learning_rate_scales() == {}


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_memory_decay_is_the_factor_on_the_last_synapses(steps: int) -> None:
    """With a zero input nothing is written, so W_t = memory_decay * W_{t-1} exactly."""
    rule = build(recursion_steps=steps, write="linear")
    kappa, beta = random_coefficients(steps, seed=steps)
    set_coefficients(rule, kappa, beta)
    diagnostics = rule.diagnostics()
    weights = randn(2, 5, 5, seed=4)
    _, after = rule.step(torch.zeros(2, 5, dtype=F64), weights)
    torch.testing.assert_close(after, diagnostics["memory_decay"] * weights)
    assert diagnostics["read_gain"].item() == pytest.approx(kappa[0][1])
    assert all(value.dim() == 0 and not value.requires_grad for value in diagnostics.values())


def test_diagnostics_at_initialisation() -> None:
    """A fresh rule reports decay_init, write_rate_init and a read gain of 1, at any depth."""
    for steps in (1, 4):
        rule = build(recursion_steps=steps, decay_init=0.9, write_rate_init=0.3)
        diagnostics = rule.diagnostics()
        assert diagnostics["memory_decay"].item() == pytest.approx(0.9)
        assert diagnostics["write_rate"].item() == pytest.approx(0.3)
        assert diagnostics["read_gain"].item() == 1.0


@pytest.mark.parametrize(
    "config",
    [
        {"recursion_steps": 1},
        {"write": "linear"},
        {"write": "mlp", "mlp_hidden": 4},
        {"alpha": "scalar"},
        {"alpha": "none", "initial_weights": "random"},
        {"initial_weights": "zeros", "learn_kappa": False, "learn_beta": False},
        {"sigma": "relu", "recursion_steps": 2},
        {"write_steps": 2},
    ],
    ids=lambda config: "-".join(f"{key}={value}" for key, value in config.items()),
)
def test_every_variant_conforms(config: dict[str, Any]) -> None:
    """Each recipe variant of the rule passes the whole plasticity conformance suite."""
    check_plasticity_rule(MetODSRule, **config)


def algorithm_1(rule: MetODSRule, x: torch.Tensor, weights: torch.Tensor) -> tuple[Any, Any]:
    """Algorithm 1 written literally, every W(s) formed (the form the fused step replaces)."""
    activations, matrices = [x], [weights]
    for s in range(1, rule.config.recursion_steps + 1):
        kappa, beta = rule.kappa[s - 1], rule.beta[s - 1]
        v_prev, w_prev = activations[-1], matrices[-1]
        read = torch.bmm(w_prev, v_prev.unsqueeze(-1)).squeeze(-1)
        if rule._sigma is not None:
            read = rule._sigma(read)
        post = v_prev if rule.projection is None else rule.projection(v_prev)
        written = v_prev.unsqueeze(-1) * post.unsqueeze(-2)
        if rule.alpha is not None:
            written = rule.alpha * written
        activations.append(
            sum((kappa[level] * activations[level] for level in range(s)), kappa[s] * read)
        )
        matrices.append(
            sum((beta[level] * matrices[level] for level in range(s)), beta[s] * written)
        )
    return activations[-1], matrices[-1]


@pytest.mark.parametrize(
    "config",
    [
        {"recursion_steps": 1, "write": "linear"},
        {"recursion_steps": 4},
        {"recursion_steps": 3, "write": "linear", "alpha": "scalar"},
        {"recursion_steps": 2, "write": "mlp", "mlp_hidden": 4, "alpha": "none"},
        {"recursion_steps": 4, "sigma": "identity"},
    ],
    ids=lambda config: "-".join(f"{key}={value}" for key, value in config.items()),
)
def test_fused_step_equals_algorithm_1_with_gradients(config: dict[str, Any]) -> None:
    """The fused step (no intermediate W(s)) gives Algorithm 1's outputs and gradients
    (to every meta-parameter, the input and the previous W) over three steps, to 1e-10."""
    _assert_step_is_algorithm_1(config, compiled=False)


def test_compiled_step_equals_algorithm_1_with_gradients() -> None:
    """Under ``torch.compile`` the step builds its writes by broadcasting, not by ``bmm``
    (``_sum_of_outer_products``): the same outputs and gradients as Algorithm 1, to 1e-10,
    for the MuJoCo recipes' rule (S = 2, linear write, one alpha per synapse). One case only:
    compiling forward and backward takes about 20 s here."""
    torch._dynamo.reset()
    _assert_step_is_algorithm_1({"recursion_steps": 2, "write": "linear"}, compiled=True)


def _assert_step_is_algorithm_1(config: dict[str, Any], compiled: bool) -> None:
    """Run the rule's step (compiled or not) and Algorithm 1 for three steps from the same
    random coefficients, alpha, input and W; compare outputs, W and every gradient."""
    torch.manual_seed(0)
    rule = build(6, initial_weights="zeros", **config)
    kappa, beta = random_coefficients(config["recursion_steps"], seed=3)
    set_coefficients(rule, kappa, beta)
    with torch.no_grad():
        if rule.alpha is not None:
            rule.alpha.copy_(torch.rand_like(rule.alpha) * 2 - 1)
    results = []
    step_under_test = torch.compile(rule.step, fullgraph=True) if compiled else rule.step
    for step in (step_under_test, lambda x, w: algorithm_1(rule, x, w)):
        x = (randn(3, 4, 6, seed=5) * 0.5).requires_grad_()
        w0 = (randn(4, 6, 6, seed=6) * 0.3).requires_grad_()
        weights, outputs = w0, []
        for t in range(3):
            y, weights = step(x[t], weights)
            outputs.append(y)
        loss = torch.stack(outputs).sin().sum() + weights.cos().sum()
        parameters = [p for p in rule.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [x, w0, *parameters])
        results.append((torch.stack(outputs), weights, grads))
    (y_fused, w_fused, g_fused), (y_ref, w_ref, g_ref) = results
    torch.testing.assert_close(y_fused, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(w_fused, w_ref, rtol=0, atol=1e-10)
    for got, expected in zip(g_fused, g_ref, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_fused_step_saves_two_matrices_per_step_for_backward() -> None:
    """Backward keeps O(1) ``(batch, N, N)`` tensors per environment step, whatever S: the
    new W and one product (Algorithm 1 written literally keeps about 3 S; 11.7 at S = 4)."""
    batch, n, steps = 8, 16, 4
    rule = build(n, recursion_steps=steps, write="linear")
    matrix_bytes = batch * n * n * 8
    storages: dict[int, int] = {}

    def pack(saved: torch.Tensor) -> torch.Tensor:
        storage = saved.untyped_storage()
        storages.setdefault(storage.data_ptr(), storage.nbytes())
        return saved

    weights = rule.init_state(batch)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda saved: saved):
        for t in range(3):
            _, weights = rule.step(randn(batch, n, seed=t), weights)
    matrices = sum(size for size in storages.values() if size >= matrix_bytes) / matrix_bytes
    assert matrices <= 2 * 3 + 1  # two per step, plus the learned W_0


def test_write_steps_hold_w_after_the_first_k_steps() -> None:
    """``write_steps`` K: the first K steps are Algorithm 1's exactly; from then on W is held
    while the output still reads it; each task counts its own steps (a reset restarts them)."""
    torch.manual_seed(0)
    plain = MetODSRule(MetODSRule.Config(recursion_steps=2), 5)
    torch.manual_seed(0)
    windowed = MetODSRule(MetODSRule.Config(recursion_steps=2, write_steps=2), 5)
    inputs = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        windowed.initial_weights.normal_()
        plain.initial_weights.copy_(windowed.initial_weights)
    weights, (held, taken) = plain.init_state(3), windowed.init_state(3)
    assert torch.equal(taken, torch.zeros(3))
    history = []
    for t, x in enumerate(inputs):
        y_plain, weights = plain.step(x, weights)
        y, (held, taken) = windowed.step(x, (held, taken))
        history.append(held)
        if t < 2:
            torch.testing.assert_close(y, y_plain, rtol=0, atol=0)
            torch.testing.assert_close(held, weights, rtol=0, atol=0)
    assert torch.equal(history[3], history[1]) and torch.equal(taken, torch.full((3,), 4.0))
    assert not torch.equal(held, weights)  # the unwindowed rule kept writing
    expected, _ = windowed._step(inputs[3], history[1])
    torch.testing.assert_close(y, expected, rtol=0, atol=0)  # the read of the held W
    restarted = windowed.reset((held, taken), torch.tensor([True, False, False]))
    assert restarted[1].tolist() == [0.0, 4.0, 4.0]
