"""Ablation launchers: the interface, their options, and submitit running real local jobs."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import torch
import yaml
from ablation_settings import HARLOW, ROOT
from ablation_settings import TINY as ABLATION_TINY

from metods_core.ablation import ablation_from_grid, load_ablation, plan_runs, run_ablation
from metods_core.ablation import jobs as jobs_module
from metods_core.ablation._node import RunOnNode, _run_lock
from metods_core.ablation.launcher import Launcher
from metods_core.ablation.launcher_options import create_launcher
from metods_core.ablation.local_launcher import LocalLauncher
from metods_core.ablation.spec import AblationError
from metods_core.ablation.submitit_launcher import SubmititLauncher
from metods_core.cli import main
from metods_core.registry import list_plugins, load_plugin
from metods_core.training.checkpoints import read_checkpoint

TINY = [*ABLATION_TINY, "trainer.max_steps=2"]
LOCAL_SUBMITIT = {"cluster": "local", "array_parallelism": 2, "time_min": 10}


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def fake_stages(run, decision):
    """Stand-in for `metods train` + `evaluate`: seed 1 fails; the others write an evaluation."""
    code = (
        "import json, os, pathlib, sys\n"
        "run_dir, seed = pathlib.Path(sys.argv[1]), int(sys.argv[2])\n"
        "print('threads', os.environ['OMP_NUM_THREADS'], flush=True)\n"
        "if seed == 1:\n"
        "    print('error: boom', file=sys.stderr); sys.exit(3)\n"
        "run_dir.mkdir(parents=True, exist_ok=True)\n"
        "summary = {'mean_reward': float(seed), 'episodes': 4, 'greedy': False, 'overrides': []}\n"
        "(run_dir / 'evaluation.json').write_text(json.dumps(summary))\n"
    )
    return [("train", [sys.executable, "-c", code, str(run.run_dir), str(run.seed)])]


def test_both_launchers_are_plugins_of_their_group() -> None:
    """local and submitit are found in metods.launchers like any third-party launcher."""
    assert {info.name for info in list_plugins("launcher")} >= {"local", "submitit"}
    assert load_plugin("launcher", "local") is LocalLauncher
    assert load_plugin("launcher", "submitit") is SubmititLauncher
    assert issubclass(SubmititLauncher, Launcher) and LocalLauncher.Config().jobs == 1


def test_launcher_options_are_validated_with_every_problem(tmp_path: Path) -> None:
    """A file's launcher section: typos get a suggestion, bad values their path; unknown names
    list the installed launchers; --launcher replaces another launcher's section."""
    path = tmp_path / "abl.yaml"
    path.write_text(
        f"base: {HARLOW}\ngrid: {{seed: [1]}}\n"
        "launcher: {name: submitit, partiton: gpu, gpus_per_run: -1}\n"
    )
    with pytest.raises(AblationError) as error:
        load_ablation(path)
    assert "launcher.partiton: unknown field (did you mean 'partition'?)" in str(error.value)
    assert "launcher.gpus_per_run" in str(error.value) and len(error.value.problems) == 2
    with pytest.raises(AblationError, match="did you mean 'submitit'"):
        ablation_from_grid(HARLOW, [], 1, launcher="submitt")
    local = load_ablation(path, launcher="local", launcher_options={"jobs": 2})
    assert local.launcher == {"name": "local", "jobs": 2}
    path.write_text(f"base: {HARLOW}\ngrid: {{seed: [1]}}\nlauncher: {{name: submitit}}\n")
    merged = load_ablation(path, launcher_options={"partition": "gpu", "cpus_per_run": 4})
    launcher = create_launcher(merged.launcher)
    assert isinstance(launcher, SubmititLauncher) and launcher.threads_per_run() == 4
    assert (
        plan_runs(dataclasses.replace(merged, out=tmp_path), 4)[0].resolved["trainer"][
            "num_threads"
        ]
        == 4
    )


def test_cli_launcher_options_reach_the_launcher(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--launcher submitit --partition ...` is validated before anything starts."""
    code = main(["ablate", str(HARLOW), "--launcher", "submitit", "--jobs", "2"])
    assert code == 2 and "launcher.jobs: unknown field" in capsys.readouterr().err
    code = main(["ablate", str(HARLOW), "--launcher-option", "nonsense"])
    assert code == 2 and "key=value" in capsys.readouterr().err


def test_slurm_job_script_carries_the_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """partition, time, GPUs, CPUs, account and setup lines become #SBATCH lines; the array is
    throttled to array_parallelism (a stand-in `srun` lets submitit build a SLURM executor)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    config = SubmititLauncher.Config(
        partition="gpu", time_min=90, gpus_per_run=2, cpus_per_run=8, array_parallelism=5,
        account="lab", setup=["module load cuda"],
    )  # fmt: skip
    executor = SubmititLauncher(config).create_executor(tmp_path / "jobs", "abl")
    script = executor._executor._make_submission_file_text("python run.py", "uid")
    for line in ["--partition=gpu", "--time=90", "--gpus-per-node=2", "--cpus-per-task=8",
                 "--account=lab", "--job-name=metods-abl", "module load cuda"]:  # fmt: skip
        assert line in script
    assert executor._executor.parameters["array_parallelism"] == 5


def test_a_requeued_job_decides_again_and_a_second_job_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a time limit the requeued job recomputes its stages from the run directory; a job
    started while another holds the run's lock fails with a clear error instead of racing it."""
    monkeypatch.setattr(jobs_module, "_stages", fake_stages)
    (run,) = plan_runs(ablation_from_grid(HARLOW, [], 1, TINY, tmp_path / "abl"), threads=1)
    requeued = RunOnNode(run, [("train", ["false"])], {"OMP_NUM_THREADS": "1"}).checkpoint()
    assert requeued.function.stages is None
    assert requeued.function().returncode == 0  # fake stages: seed 0 succeeds
    assert (run.run_dir / "evaluation.json").is_file()
    with _run_lock(run.run_dir.parent / f"{run.name}.lock") as held:
        assert held
        result = RunOnNode(run, None, {})()
    assert result.returncode == 1
    assert "another job is still running this run" in (run.run_dir.parent / f"{run.name}.log"
                                                       ).read_text()  # fmt: skip


def test_submitit_local_jobs_report_failures_and_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real submitit jobs (local processes): a failure is recorded with its log, a partial run
    directory is restarted, each job's processes get one thread, and the reports are written."""
    monkeypatch.setattr(jobs_module, "_stages", fake_stages)
    ablation = ablation_from_grid(
        HARLOW, [], 3, TINY, tmp_path / "fake", launcher="submitit",
        launcher_options=LOCAL_SUBMITIT,
    )  # fmt: skip
    partial = tmp_path / "fake" / "runs" / "metods-seed2"
    partial.mkdir(parents=True)
    (partial / "junk.txt").write_text("left by a killed run")
    result = run_ablation(ablation, command="metods ablate fake", echo=lambda _: None)
    statuses = {o.run.seed: (o.status, o.action) for o in result.outcomes}
    assert statuses == {0: ("done", "trained"), 1: ("failed", "trained"), 2: ("done", "restarted")}
    assert not (partial / "junk.txt").exists()
    assert "train exited with status 3: error: boom" in str(result.failed[0].error)
    log = (tmp_path / "fake" / "runs" / "metods-seed0.log").read_text()
    assert "threads 1" in log
    assert [row["status"] for row in read_rows(tmp_path / "fake" / "results.csv")] == [
        "done", "failed", "done",
    ]  # fmt: skip
    assert list((tmp_path / "fake" / "submitit").glob("*_result.pkl"))  # real submitit jobs
    plan = json.loads((tmp_path / "fake" / "ablation.json").read_text())
    assert plan["launcher"]["name"] == "submitit" and plan["threads_per_run"] == 1


def _state(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


def _numbers(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in ("wall_time_s", "action")} for row in rows]


@pytest.mark.slow
def test_submitit_and_local_launchers_write_the_same_results(tmp_path: Path) -> None:
    """A 2 x 2 ablation (2 cells x 2 seeds) through submitit's local executor writes the same
    results.csv and meta-parameters as the local launcher; a rerun skips the finished runs and
    resumes an interrupted one through submitit to the same numbers."""
    grid = ["plasticity.recursion_steps=1,2"]
    local = ablation_from_grid(HARLOW, grid, 2, TINY, tmp_path / "local")
    quiet = {"echo": lambda _: None}
    first = run_ablation(local, jobs=2, **quiet)
    remote = ablation_from_grid(
        HARLOW, grid, 2, TINY, tmp_path / "remote", launcher="submitit",
        launcher_options=LOCAL_SUBMITIT,
    )  # fmt: skip
    second = run_ablation(remote, **quiet)
    assert not first.failed and not second.failed
    expected = _numbers(read_rows(local.out / "results.csv"))
    assert _numbers(read_rows(remote.out / "results.csv")) == expected
    for a, b in zip(first.outcomes, second.outcomes, strict=True):
        saved = yaml.safe_load((b.run.run_dir / "recipe.yaml").read_text())
        assert saved["trainer"]["num_threads"] == 1  # one torch thread per process
        assert saved["logger"]["wandb"]["group"] == "remote"  # W&B runs grouped per ablation
        for name, tensor in _state(a.run.run_dir).items():
            assert torch.equal(tensor, _state(b.run.run_dir)[name]), name
    interrupted = second.outcomes[1].run.run_dir
    (interrupted / "checkpoints" / "last.ckpt").unlink()
    (interrupted / "checkpoints" / "step=000002.ckpt").unlink()
    (second.outcomes[2].run.run_dir / "evaluation.json").unlink()
    again = run_ablation(remote, **quiet)
    actions = [outcome.action for outcome in again.outcomes]
    assert actions == ["skipped", "resumed", "evaluated", "skipped"]
    assert _numbers(read_rows(remote.out / "results.csv")) == expected
    for name, tensor in _state(first.outcomes[1].run.run_dir).items():
        assert torch.equal(tensor, _state(interrupted)[name]), name


def test_the_documented_third_party_launcher_runs_an_ablation(
    fake_site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launcher example of docs/ablations.md ("Writing a launcher"), installed as a
    distribution of its own, is listed in metods.launchers and runs an ablation by name."""
    docs = (ROOT / "docs" / "ablations.md").read_text()
    section = docs[docs.index("### Writing a launcher") :]
    source = section.split("```python\n", 1)[1].split("```", 1)[0]
    fake_site(
        "serial-launcher",
        {"metods.launchers": {"serial": "serial_launcher:SerialLauncher"}},
        {"serial_launcher": source},
    )
    assert "serial" in {info.name for info in list_plugins("launcher")}
    monkeypatch.setattr(jobs_module, "_stages", fake_stages)
    ablation = ablation_from_grid(HARLOW, [], "0,2", TINY, tmp_path / "serial", launcher="serial")
    result = run_ablation(ablation, echo=lambda _: None)
    assert [(o.status, o.action) for o in result.outcomes] == [("done", "trained")] * 2
    assert json.loads((tmp_path / "serial" / "ablation.json").read_text())["launcher"] == {
        "name": "serial",
        "threads": 1,
    }
