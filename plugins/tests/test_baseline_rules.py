"""The baseline rules against their papers: memory (or its absence), bounded traces,
neuromodulated gating, eligibility traces and the delta rule's exact storage.

Every tensor is float64 so that equalities hold to 1e-10.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from metods_plugins.plasticity.fast_weights import FastWeightsRule, delta_rule
from metods_plugins.plasticity.hebbian import HebbianRule, HebbianState
from metods_plugins.plasticity.neuromodulated import NeuromodulatedRule, NeuromodulatedState
from metods_plugins.plasticity.recurrent import GRURule, LSTMRule, LSTMState, RNNRule
from metods_plugins.plasticity.static import StaticRule

from metods_core.interfaces import PlasticityRule
from metods_core.testing import check_plasticity_rule

F64 = torch.float64
BATCH = 3


def build(cls: type[PlasticityRule], input_size: int = 5, **config: Any) -> Any:
    """Build a float64 rule of ``cls`` from config overrides."""
    return cls(cls.Config(**config), input_size).to(F64)


def randn(*shape: int, seed: int = 1, scale: float = 1.0) -> torch.Tensor:
    """Return a float64 normal tensor of ``shape``."""
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def unroll(rule: PlasticityRule, inputs: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
    """Step ``rule`` through ``inputs`` ``(steps, batch, input)``; return outputs and state."""
    outputs = []
    for x in inputs:
        y, state = rule.step(x, state)
        outputs.append(y)
    return torch.stack(outputs), state


@pytest.mark.parametrize(
    ("cls", "config"),
    [
        pytest.param(StaticRule, {"hidden_size": 4, "activation": "identity"}, id="static"),
        pytest.param(RNNRule, {"hidden_size": 4, "nonlinearity": "relu"}, id="rnn-relu"),
        pytest.param(GRURule, {"hidden_size": 7}, id="gru-7"),
        pytest.param(LSTMRule, {"hidden_size": 7}, id="lstm-7"),
        pytest.param(HebbianRule, {"rule": "oja", "alpha": "scalar"}, id="hebbian-oja"),
        pytest.param(HebbianRule, {"hidden_size": 9, "clip": 0.5}, id="hebbian-9"),
        pytest.param(NeuromodulatedRule, {"variant": "retroactive"}, id="neuromod-retro"),
        pytest.param(NeuromodulatedRule, {"alpha": "scalar", "hidden_size": 4}, id="neuromod"),
        pytest.param(FastWeightsRule, {"key_map": "softmax", "value_size": 3}, id="fw-softmax"),
        pytest.param(FastWeightsRule, {"key_map": "l2", "projection_hidden": 5}, id="fw-l2"),
        pytest.param(
            FastWeightsRule, {"dpfp_nu": 2, "output_activation": "tanh"}, id="fw-dpfp2-tanh"
        ),
    ],
)
def test_variants_conform(cls: type[PlasticityRule], config: dict[str, Any]) -> None:
    """Every configured variant, not only the defaults, passes the conformance suite."""
    check_plasticity_rule(cls, **config)


@pytest.mark.parametrize("cls", [StaticRule, RNNRule, GRURule, LSTMRule, HebbianRule])
def test_default_width_is_the_input_size(cls: type[PlasticityRule]) -> None:
    """With ``hidden_size`` unset, the output is as wide as the input."""
    assert build(cls, input_size=6).output_size == 6
    assert build(cls, input_size=6, hidden_size=11).output_size == 11


# ---- static: no memory ----


def test_static_output_is_independent_of_history() -> None:
    """The static layer's output is tanh(W x + b) of the current input, whatever came before."""
    rule = build(StaticRule, hidden_size=4)
    state = rule.init_state(BATCH)
    assert state.shape == (BATCH, 0)
    x = randn(BATCH, 5, seed=2)
    _, after_history = unroll(rule, randn(10, BATCH, 5, seed=3, scale=10.0), state)
    y_fresh, _ = rule.step(x, state)
    y_after, _ = rule.step(x, after_history)
    torch.testing.assert_close(y_after, y_fresh, rtol=0, atol=0)
    torch.testing.assert_close(y_fresh, torch.tanh(rule.layer(x)))


# ---- RL^2 recurrent memories: the hidden state carries information ----


@pytest.mark.parametrize("cls", [RNNRule, GRURule, LSTMRule])
def test_recurrent_state_carries_information(cls: type[PlasticityRule]) -> None:
    """Two lifetimes that differ only in their first input still differ five steps later, and
    reset makes them identical again."""
    rule = build(cls, hidden_size=6)
    inputs = randn(6, BATCH, 5, seed=4)
    changed = inputs.clone()
    changed[0] += 1.0
    y, state = unroll(rule, inputs, rule.init_state(BATCH))
    y_changed, state_changed = unroll(rule, changed, rule.init_state(BATCH))
    assert (y[-1] - y_changed[-1]).abs().max() > 1e-4
    everyone = torch.ones(BATCH, dtype=torch.bool)
    x = randn(BATCH, 5, seed=5)
    y_reset, _ = rule.step(x, rule.reset(state, everyone))
    y_reset_changed, _ = rule.step(x, rule.reset(state_changed, everyone))
    torch.testing.assert_close(y_reset, y_reset_changed, rtol=0, atol=0)


def test_lstm_state_is_hidden_and_cell() -> None:
    """The LSTM state is (h, c); the output is h."""
    rule = build(LSTMRule, hidden_size=4)
    y, state = rule.step(randn(BATCH, 5), rule.init_state(BATCH))
    assert isinstance(state, LSTMState)
    assert state.hidden.shape == state.cell.shape == (BATCH, 4)
    torch.testing.assert_close(y, state.hidden, rtol=0, atol=0)


# ---- differentiable plasticity (Miconi et al. 2018) ----


def test_hebbian_decay_update_matches_the_paper() -> None:
    """h = tanh(U x + b + (W + alpha * Hebb) h_prev); Hebb' = (1 - eta) Hebb + eta h h_prev^T."""
    rule = build(HebbianRule, hidden_size=4, clip=10.0)
    pre, hebb = randn(BATCH, 4, seed=6).tanh(), randn(BATCH, 4, 4, seed=7, scale=0.5)
    x = randn(BATCH, 5, seed=8)
    y, state = rule.step(x, HebbianState(pre, hebb))
    plastic = rule.weights + rule.alpha * hebb
    expected = torch.tanh(rule.input(x) + torch.einsum("bji,bi->bj", plastic, pre))
    eta = torch.sigmoid(rule.eta_logit)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(
        state.hebb, (1 - eta) * hebb + eta * torch.einsum("bj,bi->bji", y, pre)
    )


@pytest.mark.parametrize(("update", "clip", "bound"), [("decay", 1e6, 1.0), ("oja", 1.0, 1.0)])
def test_hebbian_trace_stays_bounded(update: str, clip: float, bound: float) -> None:
    """Over 200 steps of large inputs the trace stays finite and within its bound: the decaying
    trace by itself (a convex combination of products of tanh units), Oja's by the clip."""
    rule = build(HebbianRule, hidden_size=8, rule=update, clip=clip, eta_init=0.5, alpha_init=1.0)
    state = rule.init_state(BATCH)
    with torch.no_grad():
        for t in range(200):
            _, state = rule.step(randn(BATCH, 5, seed=t, scale=100.0), state)
            assert torch.isfinite(state.hebb).all()
            assert state.hebb.abs().max() <= bound + 1e-12
    assert state.hebb.abs().max() > 0


# ---- backpropamine (Miconi et al. 2019) ----


def silence_modulator(rule: NeuromodulatedRule) -> None:
    """Set w_m = 0 and b_m = 0, so that M(t) = 0."""
    with torch.no_grad():
        rule.modulator.weight.zero_()
        rule.modulator.bias.zero_()


def neuromodulated_state(rule: NeuromodulatedRule) -> NeuromodulatedState:
    """A mid-lifetime state: non-zero activity, trace and (if any) eligibility."""
    fresh = rule.init_state(BATCH)
    eligibility = fresh.eligibility
    if eligibility.dim() == 3:
        eligibility = randn(BATCH, 4, 4, seed=11, scale=0.3)
    return NeuromodulatedState(
        randn(BATCH, 4, seed=9).tanh(), randn(BATCH, 4, 4, seed=10, scale=0.3), eligibility
    )


@pytest.mark.parametrize("variant", ["simple", "retroactive"])
def test_zero_modulation_leaves_the_trace_unchanged(variant: str) -> None:
    """With M(t) = 0 the plastic trace Hebb does not change, however active the units are."""
    rule = build(NeuromodulatedRule, hidden_size=4, variant=variant)
    silence_modulator(rule)
    state = neuromodulated_state(rule)
    _, new = rule.step(randn(BATCH, 5, seed=12, scale=3.0), state)
    torch.testing.assert_close(new.hebb, state.hebb, rtol=0, atol=0)


def test_simple_modulation_gates_the_current_coactivity() -> None:
    """Simple variant: Hebb' = clip(Hebb + M(t) h_t h_{t-1}^T) with M(t) = tanh(w_m . h_t + b)."""
    rule = build(NeuromodulatedRule, hidden_size=4, clip=100.0)
    state = neuromodulated_state(rule)
    y, new = rule.step(randn(BATCH, 5, seed=13), state)
    modulation = torch.tanh(rule.modulator(y)).unsqueeze(-1)
    assert modulation.abs().min() > 0
    coactivity = torch.einsum("bj,bi->bji", y, state.hidden)
    torch.testing.assert_close(new.hebb, state.hebb + modulation * coactivity)


def test_retroactive_modulation_acts_on_the_eligibility_trace() -> None:
    """Retroactive variant: Hebb' = clip(Hebb + M(t) E) with the previous trace E, and
    E' = (1 - eta) E + eta h_t h_{t-1}^T; with E = 0 the current co-activity alone changes
    nothing yet."""
    rule = build(NeuromodulatedRule, hidden_size=4, variant="retroactive", clip=100.0)
    state = neuromodulated_state(rule)
    y, new = rule.step(randn(BATCH, 5, seed=14), state)
    modulation = torch.tanh(rule.modulator(y)).unsqueeze(-1)
    torch.testing.assert_close(new.hebb, state.hebb + modulation * state.eligibility)
    eta = torch.sigmoid(rule.eta_logit)
    coactivity = torch.einsum("bj,bi->bji", y, state.hidden)
    torch.testing.assert_close(new.eligibility, (1 - eta) * state.eligibility + eta * coactivity)
    no_trace = state._replace(eligibility=torch.zeros_like(state.eligibility))
    _, new = rule.step(randn(BATCH, 5, seed=14), no_trace)
    torch.testing.assert_close(new.hebb, state.hebb, rtol=0, atol=0)
    assert new.eligibility.abs().max() > 0


def test_neuromodulated_trace_is_clipped() -> None:
    """Hebb stays in [-clip, clip] over a long lifetime of large inputs."""
    rule = build(NeuromodulatedRule, hidden_size=6, clip=0.7, alpha_init=1.0)
    with torch.no_grad():
        _, state = unroll(rule, randn(200, BATCH, 5, scale=100.0), rule.init_state(BATCH))
    assert state.hebb.abs().max() <= 0.7 + 1e-12


# ---- delta-rule fast weights (Schlag et al. 2021) ----


def test_delta_rule_with_unit_keys_stores_the_latest_value() -> None:
    """With ||k||_2 = 1 and beta = 1, writing v1 then v2 under one key leaves W k = v2."""
    key = torch.nn.functional.normalize(randn(BATCH, 6, seed=15), dim=-1)
    one = torch.ones(BATCH, 1, dtype=F64)
    weights = delta_rule(randn(BATCH, 4, 6, seed=16), key, randn(BATCH, 4, seed=17), one)
    weights = delta_rule(weights, key, latest := randn(BATCH, 4, seed=18), one)
    torch.testing.assert_close(torch.einsum("bvk,bk->bv", weights, key), latest)


def test_delta_rule_with_sum_normalised_keys_moves_part_way() -> None:
    """With sum-normalised keys a write moves W k a fraction beta ||k||^2 of the way to v."""
    rule = build(FastWeightsRule, key_map="softmax")
    key = rule.features(randn(BATCH, rule.key_size, seed=19))
    weights, value = randn(BATCH, 5, rule.feature_size, seed=20), randn(BATCH, 5, seed=21)
    strength = torch.full((BATCH, 1), 0.7, dtype=F64)
    fraction = strength * key.square().sum(-1, keepdim=True)
    before = torch.einsum("bvk,bk->bv", weights, key)
    after = torch.einsum("bvk,bk->bv", delta_rule(weights, key, value, strength), key)
    torch.testing.assert_close(after, (1 - fraction) * before + fraction * value)


def test_dpfp_features_are_sum_normalised() -> None:
    """DPFP gives 2 * d * nu non-negative features that sum to one."""
    rule = build(FastWeightsRule, key_size=3, dpfp_nu=2)
    features = rule.features(randn(BATCH, 3, seed=22))
    assert features.shape == (BATCH, 12) == (BATCH, rule.feature_size)
    assert (features >= 0).all()
    torch.testing.assert_close(features.sum(-1), torch.ones(BATCH, dtype=F64))


def test_fast_weights_step_overwrites_a_key() -> None:
    """Through ``step``: two inputs with the same key and different values, written at
    beta = 1 with L2 keys, then read with query = key, return the second value exactly."""
    rule = build(FastWeightsRule, input_size=4, key_size=2, value_size=2, key_map="l2")
    with torch.no_grad():
        rule.projection.weight.zero_()
        rule.projection.bias.zero_()
        eye = torch.eye(2, dtype=F64)
        rule.projection.weight[0:2, 0:2] = eye  # key   = x[0:2]
        rule.projection.weight[2:4, 0:2] = eye  # query = x[0:2]
        rule.projection.weight[4:6, 2:4] = eye  # value = x[2:4]
        rule.projection.bias[6] = 50.0  # sigmoid(50) = 1 in float64: beta = 1
    first = torch.tensor([[0.6, 0.8, 3.0, -1.0]] * BATCH, dtype=F64)
    second = torch.tensor([[1.2, 1.6, -2.0, 0.5]] * BATCH, dtype=F64)
    outputs, weights = unroll(rule, torch.stack([first, second]), rule.init_state(BATCH))
    torch.testing.assert_close(outputs[0], first[:, 2:])
    torch.testing.assert_close(outputs[1], second[:, 2:])
    assert weights.shape == (BATCH, 2, 2)
