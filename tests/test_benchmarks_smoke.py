"""The throughput benchmark runs end to end on a tiny grid (timings are never checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "harlow_throughput.py"


def test_bad_grid_is_refused_before_anything_runs():
    """A setting that is not three positive integers is a usage error (exit status 2)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--grid", "8"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "expected B,N,S" in done.stderr


@pytest.mark.slow
def test_tiny_grid_prints_both_tables_and_writes_json(tmp_path):
    """A tiny grid prints the outer-step and plastic-update tables and writes every number."""
    out = tmp_path / "bench.json"
    command = [sys.executable, str(SCRIPT), "--grid", "8,20,1", "--steps", "2", "--warmup", "1"]
    command += ["--threads", "1", "--json", str(out), "--override", "trainer.compile=false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| batch | N | S | env-steps/s | active env-steps/s | outer steps/s |" in done.stdout
    assert "| batch | N | S | synaptic updates/s |" in done.stdout
    assert "| 8 | 20 | 1 |" in done.stdout
    results = json.loads(out.read_text())
    (outer,) = results["outer"]
    (rule,) = results["rule"]
    assert (outer["batch"], outer["N"], outer["S"]) == (8, 20, 1)
    assert outer["env_steps_per_s"] > 0
    assert 0 < outer["active_env_steps_per_s"] <= outer["env_steps_per_s"]
    assert rule["synaptic_updates_per_s"] > 0


STEPPING = SCRIPT.parent / "env_stepping.py"


def test_env_stepping_refuses_a_bad_batch_list():
    """A batch list that is not positive integers is a usage error (exit status 2)."""
    done = subprocess.run(
        [sys.executable, str(STEPPING), "--batch", "64,x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "expected positive integers" in done.stderr


def test_env_stepping_times_the_maze_and_writes_json(tmp_path):
    """The maze's sampling and stepping are timed at each batch size and every number is kept."""
    out = tmp_path / "stepping.json"
    recipe = SCRIPT.parent.parent / "recipes" / "maze" / "metods.yaml"
    command = [sys.executable, str(STEPPING), "--recipe", str(recipe), "--batch", "4,8"]
    command += ["--lifetimes", "1", "--warmup", "0", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| task | batch | steps per lifetime | sample ms |" in done.stdout
    assert "| maze | 8 | 100 |" in done.stdout
    results = json.loads(out.read_text())
    assert [result["batch"] for result in results] == [4, 8]
    for result in results:
        assert result["env_steps_per_s"] >= result["env_steps_per_s_with_sampling"] > 0
        assert 0 < result["sample_share"] < 1


BPTT = SCRIPT.parent / "bptt_memory.py"


def test_bptt_memory_refuses_a_bad_length_list():
    """Lifetime lengths that are not positive integers are a usage error (exit status 2)."""
    done = subprocess.run(
        [sys.executable, str(BPTT), "--lengths", "75,0"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "expected positive integers" in done.stderr


@pytest.mark.slow
def test_bptt_memory_measures_each_mode_in_its_own_process(tmp_path):
    """A tiny run measures full and checkpointed BPTT at one length and keeps every number."""
    out = tmp_path / "bptt.json"
    command = [sys.executable, str(BPTT), "--lengths", "12", "--batch", "2", "--chunk", "5"]
    command += ["--modes", "full,checkpointed", "--steps", "1", "--warmup", "0"]
    command += ["--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| T | mode | chunk | ms per outer step | peak memory MB |" in done.stdout
    assert "| 12 | full | 5 |" in done.stdout and "| 12 | checkpointed | 5 |" in done.stdout
    results = json.loads(out.read_text())["results"]
    assert [(r["T"], r["mode"], r["lifetime_steps"]) for r in results] == [
        (12, "full", 12),
        (12, "checkpointed", 12),
    ]
    assert all(r["ms_per_outer_step"] > 0 and r["active_fraction"] == 1.0 for r in results)


GPU_BENCH = SCRIPT.parent / "gpu_throughput.py"


def test_gpu_benchmark_refuses_unknown_tasks_and_counts_the_plastic_update():
    """An unknown task is a usage error; the roofline counts (S² + 6S) N² forward FLOPs."""
    done = subprocess.run(
        [sys.executable, str(GPU_BENCH), "--device", "cpu", "--tasks", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "names something unknown" in done.stderr
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from gpu_throughput import roofline
    finally:
        sys.path.remove(str(SCRIPT.parent))
    cost = roofline(20, 4, "vanilla")
    assert cost["flops_forward"] == 40 * 400 and cost["bytes_forward_min"] == 2 * 400 * 4
    assert roofline(20, 1, "vanilla")["flops_forward"] == 7 * 400  # read 2, write 3, sum 2


@pytest.mark.slow
def test_gpu_benchmark_runs_on_cpu_with_tiny_sizes(tmp_path):
    """`--device cpu --batches 64 --steps 2`: Harlow and maze, eager and compiled, one table
    with the roofline beside each row, and every figure in the JSON file."""
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(GPU_BENCH), "--device", "cpu", "--batches", "64"]
    command += ["--steps", "2", "--warmup", "1", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| task | mode | batch | env-steps/s |" in done.stdout and "of roofline" in done.stdout
    results = json.loads(out.read_text())
    rows = {(row["task"], row["mode"]) for row in results["results"]}
    assert rows == {(t, m) for t in ("harlow", "maze") for m in ("eager", "compile")}
    assert all(row["env_steps_per_s"] > 0 for row in results["results"])
    assert results["peaks"]["copy_gbs"] > 0


def test_outer_step_split_times_collection_and_learning():
    """benchmarks/outer_step_split.py splits a PPO outer step into collection and learning,
    once per compared value (timings are printed, never checked)."""
    script = SCRIPT.parent / "outer_step_split.py"
    recipe = SCRIPT.parent.parent / "recipes" / "harlow" / "metods_ppo.yaml"
    command = [sys.executable, str(script), str(recipe), "data.batch_tasks=2", "task.max_steps=5"]
    command += ["--steps", "1", "--warmup", "0", "--json", "--compare", "trainer.compile=false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["compile"] is False and result["overrides"][-1] == "trainer.compile=false"
    assert result["collection_s"] > 0 and result["learning_s"] > 0
    assert abs(result["collection_s"] + result["learning_s"] - result["total_s"]) < 1e-9


def test_outer_step_split_settings_of_several_fields():
    """``--setting`` measures once per setting, each applying all of its overrides."""
    script = SCRIPT.parent / "outer_step_split.py"
    recipe = SCRIPT.parent.parent / "recipes" / "harlow" / "metods_ppo.yaml"
    command = [sys.executable, str(script), str(recipe), "data.batch_tasks=2", "task.max_steps=6"]
    command += ["trainer.compile=false", "--steps", "1", "--warmup", "0", "--json"]
    command += ["--setting", "meta_optimizer.epochs=1", "--setting", "meta_optimizer.window=3 "]
    command[-1] += "meta_optimizer.minibatches=4"
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    first, second = json.loads(done.stdout)
    assert first["overrides"][-1] == "meta_optimizer.epochs=1"
    assert second["overrides"][-2:] == ["meta_optimizer.window=3", "meta_optimizer.minibatches=4"]


def test_every_benchmark_script_has_a_readme_section():
    """benchmarks/README.md is where a benchmark is found: each script there has a heading."""
    benchmarks = SCRIPT.parent
    readme = (benchmarks / "README.md").read_text()
    headings = [line for line in readme.splitlines() if line.startswith("## ")]
    missing = [
        script.name
        for script in sorted(benchmarks.glob("*.py"))
        if not any(f"`{script.name}`" in heading for heading in headings)
    ]
    assert not missing, f"benchmarks/README.md has no '## ' heading naming {missing}"
