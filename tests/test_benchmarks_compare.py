"""The plain reference, the side-by-side comparisons and the memory model, at tiny sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import memory_model  # noqa: E402
import plain_metods  # noqa: E402

sys.path.remove(str(BENCH))


@pytest.mark.parametrize("recursions", [1, 3])
def test_plain_reference_computes_the_metods_rule(recursions):
    """Given the same meta-parameters, the plain Algorithm 1 equals our MetODS rule's step."""
    from metods_plugins.plasticity.metods import MetODSRule

    n, batch = 6, 3
    generator = torch.Generator().manual_seed(0)
    rule = MetODSRule(MetODSRule.Config(recursion_steps=recursions), n)
    plain = plain_metods.PlainMetODS(inputs=5, n=n, recursions=recursions, actions=3)
    with torch.no_grad():
        for parameter in [*rule.kappa, *rule.beta, rule.alpha, rule.initial_weights]:
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
        for s in range(recursions):
            plain.kappa[s].copy_(rule.kappa[s])
            plain.beta[s].copy_(rule.beta[s])
        plain.alpha.copy_(rule.alpha)
        plain.w0.copy_(rule.initial_weights)
    x = torch.tanh(torch.randn(batch, n, generator=generator))
    w = rule.init_state(batch) + 0.1 * torch.randn(batch, n, n, generator=generator)
    y_rule, w_rule = rule.step(x, w)
    y_plain, w_plain = plain.plastic_step(x, w)
    torch.testing.assert_close(y_plain, y_rule, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w_plain, w_rule, rtol=1e-5, atol=1e-6)


def test_plain_outer_step_trains_on_harlow():
    """One plain outer step on our Harlow env gives a finite loss and changes the parameters."""
    net, optimizer, sampler, generator = plain_metods.build((4, 8, 2))
    before = [parameter.detach().clone() for parameter in net.parameters()]
    loss, reward = plain_metods.outer_step(net, optimizer, sampler, 4, generator)
    assert torch.isfinite(torch.tensor(loss)) and torch.isfinite(reward)
    after = list(net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_memory_model_counts_more_saved_bytes_for_longer_lifetimes():
    """The hooks see every saved tensor: a longer lifetime and a larger S save more."""
    short = memory_model.measure((2, 8, 1), "eager", "hooks", 6)["bytes"]
    long = memory_model.measure((2, 8, 1), "eager", "hooks", 12)["bytes"]
    deep = memory_model.measure((2, 8, 3), "eager", "hooks", 12)["bytes"]
    assert 0 < short < long < deep
    rows = [
        {"B": b, "N": n, "S": s, "bytes_per_step": 4 * b * n * n * (3 * s + 2) + 10 * b * n}
        for b in (2, 4)
        for n in (4, 8)
        for s in (1, 2)
    ]
    coef = memory_model.fit(rows)
    assert coef["c1_BN2S"] == pytest.approx(12) and coef["c0_BN2"] == pytest.approx(8)
    assert coef["d_BN"] == pytest.approx(10)


@pytest.mark.slow
def test_compare_plain_runs_interleaved_pairs_and_writes_the_ratio(tmp_path):
    """A tiny side-by-side run: both sides in fresh processes, a ratio per pair, a median."""
    out = tmp_path / "compare.json"
    command = [sys.executable, str(BENCH / "compare_plain.py"), "--settings", "2,8,1"]
    command += ["--pairs", "1", "--steps", "1", "--warmup", "0", "--json", str(out)]
    command += ["--override", "trainer.compile=false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| pair | first | metods env-steps/s | plain env-steps/s |" in done.stdout
    result = json.loads(out.read_text())["2,8,1"]
    (pair,) = result["pairs"]
    assert pair["metods"]["S"] == 1 and pair["plain"]["S"] == 1
    assert result["median_ratio"] == pytest.approx(
        pair["metods"]["env_steps_per_s"] / pair["plain"]["env_steps_per_s"]
    )


@pytest.mark.slow
def test_maze_throughput_times_ours_against_another_script(tmp_path):
    """Ours at a tiny size against a stand-in for Miconi's script (a JSON line of env-steps/s)."""
    stand_in = tmp_path / "maze.py"
    stand_in.write_text('import json\nprint(json.dumps({"env_steps_per_s": 1000.0}))\n')
    out = tmp_path / "maze.json"
    command = [sys.executable, str(BENCH / "maze_throughput.py"), "--miconi", str(stand_in)]
    command += ["--pairs", "2", "--steps", "1", "--warmup", "0", "--batch", "2", "--hidden", "8"]
    command += ["--override", "trainer.compile=false", "--override", "task.lifetime_steps=20"]
    command += ["--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [row["first"] for row in result["pairs"]] == ["metods", "miconi"]
    ours = [row["metods"] for row in result["pairs"]]
    assert all(row["rule"] == "neuromodulated" and row["lifetime_steps"] == 20 for row in ours)
    assert len(result["ratios"]) == 2 and result["median_ratio"] > 0
