"""Multi-node DDP as a cluster starts it: one process per node, told its place by environment
variables, rather than spawned by Lightning (see docs/training.md, "Multi-node on SLURM")."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARLOW = ROOT / "recipes" / "harlow" / "metods.yaml"
HELPERS = ROOT / "tests" / "helpers"
NODES = 2


def free_port() -> int:
    """Return a TCP port nobody listens on now (the rendezvous port of the ranks)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def node_env(style: str, node: int, port: int) -> dict[str, str]:
    """Return the variables a cluster gives the process of ``node`` (one process per node)."""
    if style == "lightning":  # LightningEnvironment: what a hand-written launch script sets
        return {"NODE_RANK": str(node), "LOCAL_RANK": "0", "WORLD_SIZE": str(NODES)}
    return {  # SLURMEnvironment: what `srun` sets for `--nodes=2 --ntasks-per-node=1`
        "SLURM_NTASKS": str(NODES), "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": str(NODES),
        "SLURM_PROCID": str(node), "SLURM_LOCALID": "0", "SLURM_NODEID": str(node),
        "SLURM_JOB_NAME": "metods-test", "SLURM_JOB_ID": str(port),
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("style", ["lightning", "slurm"])
def test_two_nodes_from_environment_variables(style: str, tmp_path: Path) -> None:
    """Two processes started by hand, each told its node by environment variables (Lightning's:
    MASTER_ADDR, MASTER_PORT, NODE_RANK, WORLD_SIZE, LOCAL_RANK; or SLURM's, as `srun` sets
    them), with `trainer.num_nodes=2 trainer.devices=1`, form one DDP job writing one run
    directory (node 1 starts after node 0 wrote it, as a slow node would): each rank trains on
    its own tasks every step, and the meta-parameters end identical on both."""
    run_dir, port = tmp_path / "multinode", free_port()
    overrides = ["trainer.devices=1", f"trainer.num_nodes={NODES}", "trainer.num_threads=1"]
    processes = []
    for node in range(NODES):
        env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
        env.update(PYTHONPATH=str(HELPERS), OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
        env.update(MASTER_PORT=str(port), **node_env(style, node, port))
        command = [sys.executable, str(HELPERS / "ddp_check.py"), str(HARLOW), str(run_dir)]
        log = (tmp_path / f"node{node}.log").open("w")
        deadline = time.monotonic() + 300
        while node and not (run_dir / "recipe.yaml").exists():  # node 1 comes late: it must
            assert time.monotonic() < deadline and processes[0].poll() is None  # join, not refuse
            time.sleep(0.1)
        processes.append(
            subprocess.Popen([*command, *overrides], env=env, cwd=tmp_path, stdout=log, stderr=log)
        )
    codes = [process.wait(timeout=400) for process in processes]
    logs = "\n".join((tmp_path / f"node{k}.log").read_text()[-3000:] for k in range(NODES))
    assert codes == [0] * NODES, logs
    ranks = [json.loads((run_dir / f"rank{k}.json").read_text()) for k in range(NODES)]
    assert [r["rank"] for r in ranks] == [0, 1] and [r["world_size"] for r in ranks] == [2, 2]
    assert len(ranks[0]["tasks"]) == 3
    assert all(a != b for a, b in zip(ranks[0]["tasks"], ranks[1]["tasks"], strict=True))
    assert ranks[0]["parameters"] == ranks[1]["parameters"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "recipe.yaml").is_file()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs  # one process per node, none spawned
