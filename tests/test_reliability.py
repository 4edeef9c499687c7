"""Trust and recovery through the real CLI: every case a user can cause, one table.

Each case runs ``metods ...`` (in-process through ``metods_core.cli.main``; the costly ones in
a subprocess) on a copy of one tiny trained run, and checks the exit status, a fragment of the
message, that no traceback was printed, that the files named stayed byte-identical, that the
paths named do not exist afterwards (the malicious checkpoint's marker), and that no temporary
file was left behind. docs/reliability.md lists the same cases with their outcome.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from metods_core.cli import main
from metods_core.recipe import load_recipe
from metods_core.training import train_recipe

ROOT = Path(__file__).resolve().parents[1]
HARLOW = ROOT / "recipes" / "harlow" / "metods.yaml"
TINY = [
    "trainer.max_steps=2",
    "data.batch_tasks=4",
    "plasticity.recursion_steps=1",
    "trainer.compile=false",
    "logger.wandb.mode=disabled",
    "trainer.num_threads=1",
    "trainer.checkpoint_every_n_steps=1",
    "trainer.log_every_n_steps=1",
    "evaluation.batch_tasks=4",
]


class Payload:
    """Pickles as a call to ``os.mkdir(marker)``: the code a malicious checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def write_malicious(path: Path, marker: Path) -> None:
    """Write a checkpoint-looking file whose loading with weights_only=False makes ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "payload": Payload(marker)}, path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run trained for 2 outer steps, a checkpoint after each."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train_recipe(load_recipe(HARLOW, TINY), run)
    return run


@pytest.fixture
def case_dir(tmp_path: Path, trained: Path) -> Path:
    """A folder holding ``run``, a fresh copy of the trained run."""
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path


def _fail_checkpoint_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every checkpoint write fail as on a full disk (fsync of the temporary file)."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".ckpt.tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr("metods_core.training.atomic.os.fsync", fsync)


@dataclasses.dataclass(frozen=True)
class Case:
    """One command a user can run on a broken or unusual input, and what must happen."""

    name: str
    argv: list[str]
    """The command after ``metods``; ``{d}`` stands for the case folder."""
    code: int
    fragment: str
    """Must appear in the output (stderr, or stdout for success)."""
    unchanged: tuple[str, ...] = ()
    """Files (relative to the case folder) that must stay byte-identical."""
    absent: tuple[str, ...] = ()
    """Paths that must not exist afterwards."""
    prepare: Callable[[Path], None] | None = None
    patch: Callable[[pytest.MonkeyPatch], None] | None = None


def _malicious_last(d: Path) -> None:
    write_malicious(d / "run/checkpoints/last.ckpt", d / "marker")


def _malicious_file(d: Path) -> None:
    write_malicious(d / "evil.ckpt", d / "marker")


def _evaluation(d: Path) -> None:
    (d / "run/evaluation.json").write_text('{"mean_reward": 1.5}\n')


def _no_checkpoints(d: Path) -> None:
    shutil.rmtree(d / "run/checkpoints")
    (d / "run/checkpoints").mkdir()


def _truncate_last(d: Path) -> None:
    last = d / "run/checkpoints/last.ckpt"
    last.write_bytes(last.read_bytes()[:100])


def _a_file(d: Path) -> None:
    (d / "file.txt").write_text("not a folder\n")


def _other_folder(d: Path) -> None:
    (d / "notes").mkdir()
    (d / "notes/todo.txt").write_text("my notes\n")


def _env_recipe(d: Path) -> None:
    (d / "env.yaml").write_text(f"defaults: [{HARLOW}]\nname: ${{oc.env:METODS_TEST_SECRET}}\n")


def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METODS_TEST_SECRET", "hunter2")


TRAIN = ["train", str(HARLOW), *TINY]
CHECKPOINTS = ("run/checkpoints/last.ckpt", "run/checkpoints/step=000002.ckpt")
RUN_FILES = ("run/recipe.yaml", *CHECKPOINTS)

CASES = [
    # 1. checkpoints cannot run code
    Case(
        "evaluate a malicious checkpoint",
        ["evaluate", "{d}/run"],
        2,
        "refused without running anything",
        ("run/recipe.yaml",),
        ("marker",),
        _malicious_last,
    ),
    Case(
        "resume from a malicious checkpoint",
        ["train", "--resume", "{d}/run"],
        2,
        "refused without running anything",
        ("run/recipe.yaml",),
        ("marker", "run/resumes.yaml"),
        _malicious_last,
    ),
    Case(
        "evaluate --checkpoint a malicious file",
        ["evaluate", "{d}/run", "--checkpoint", "{d}/evil.ckpt"],
        2,
        "refused without running anything",
        (),
        ("marker",),
        _malicious_file,
    ),
    # 2. resume overrides: refused when they change the run, or leave nothing to train
    Case(
        "resume changing the agent's shape",
        ["train", "--resume", "{d}/run", "agent.hidden=8"],
        2,
        "cannot change agent.hidden",
        RUN_FILES,
        ("run/resumes.yaml",),
    ),
    Case(
        "resume changing seed and rule",
        ["train", "--resume", "{d}/run", "seed=3", "plasticity.recursion_steps=2"],
        2,
        "plasticity.recursion_steps (1 -> 2), seed (0 -> 3)",
        RUN_FILES,
        ("run/resumes.yaml",),
    ),
    Case(
        "resume with max_steps below the checkpoint",
        ["train", "--resume", "{d}/run", "trainer.max_steps=1"],
        2,
        "nothing to train",
        RUN_FILES,
        ("run/resumes.yaml",),
    ),
    # 4. evaluate's arguments
    Case(
        "evaluate --episodes -5",
        ["evaluate", "{d}/run", "--episodes", "-5"],
        2,
        "--episodes must be at least 1",
        ("run/evaluation.json",),
        (),
        _evaluation,
    ),
    Case(
        "evaluate --episodes 0",
        ["evaluate", "{d}/run", "--episodes", "0"],
        2,
        "--episodes must be at least 1",
        ("run/evaluation.json",),
        (),
        _evaluation,
    ),
    Case(
        "evaluate --checkpoint an earlier checkpoint",
        [
            "evaluate",
            "{d}/run",
            "--episodes",
            "4",
            "--checkpoint",
            "{d}/run/checkpoints/step=000001.ckpt",
        ],
        0,
        "mean_reward",
        CHECKPOINTS,
    ),
    Case(
        "evaluate a truncated last.ckpt",
        ["evaluate", "{d}/run"],
        2,
        "use one with --checkpoint PATH",
        CHECKPOINTS[1:],
        (),
        _truncate_last,
    ),
    # 5. a checkpoint write that fails (disk full) leaves the earlier ones and no partial file
    Case(
        "disk full while writing a checkpoint",
        ["train", "--resume", "{d}/run", "trainer.max_steps=4"],
        2,
        "No space left on device",
        CHECKPOINTS,
        (),
        None,
        _fail_checkpoint_writes,
    ),
    # 6. nan / inf / sizes
    Case(
        "lr=inf",
        ["validate", str(HARLOW), "meta_optimizer.lr=inf"],
        2,
        "meta_optimizer.lr: expected a finite number",
    ),
    Case(
        "decay_init=nan",
        ["validate", str(HARLOW), "plasticity.decay_init=.nan"],
        2,
        "plasticity.decay_init: expected a finite number",
    ),
    Case(
        "an impossible agent size",
        [*TRAIN, "agent.hidden=100000000", "--run-dir", "{d}/new"],
        2,
        "more than this machine's",
        (),
        ("new",),
    ),
    Case(
        "an absurd batch",
        ["validate", str(HARLOW), "data.batch_tasks=100000000"],
        2,
        "less than or equal to 1000000",
    ),
    # 7. OS-level errors and run folders
    Case(
        "--run-dir is a file",
        [*TRAIN, "--run-dir", "{d}/file.txt"],
        2,
        "is a file",
        ("file.txt",),
        (),
        _a_file,
    ),
    Case(
        "--run-dir holds other files",
        [*TRAIN, "--run-dir", "{d}/notes"],
        2,
        "is not empty and is not a metods run",
        ("notes/todo.txt",),
        (),
        _other_folder,
    ),
    Case(
        "--run-dir holds a run",
        [*TRAIN, "--run-dir", "{d}/run"],
        2,
        "already holds a run",
        RUN_FILES,
    ),
    Case(
        "--run-dir where writing is not permitted",
        [*TRAIN, "--run-dir", "/sys/metods-test"],
        2,
        "Operation not permitted",
    ),
    # 8. recipes never read the environment
    Case(
        "${oc.env:...} in a recipe",
        ["train", "{d}/env.yaml", *TINY, "--run-dir", "{d}/new"],
        2,
        "may not read the environment",
        ("env.yaml",),
        ("new",),
        _env_recipe,
        _secret,
    ),
    # 9. advice that works
    Case(
        "no checkpoint yet",
        ["evaluate", "{d}/run"],
        2,
        "--run-dir NEW_DIR",
        ("run/recipe.yaml",),
        (),
        _no_checkpoints,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case(
    case: Case, case_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The command exits with the case's status and message, and damages nothing."""
    d = case_dir
    if case.prepare:
        case.prepare(d)
    if case.patch:
        case.patch(monkeypatch)
    before = {name: (d / name).read_bytes() for name in case.unchanged}
    monkeypatch.chdir(d)
    code = main([arg.replace("{d}", str(d)) for arg in case.argv])
    out, err = capsys.readouterr()
    assert code == case.code, err[-2000:]
    assert case.fragment in (err if case.code else out), err[-2000:]
    assert "Traceback" not in err
    if case.code:
        assert "\nerror: " in "\n" + err, err[-2000:]
    for name, content in before.items():
        assert (d / name).read_bytes() == content, f"{name} changed"
    for name in case.absent:
        assert not (d / name).exists(), f"{name} exists"
    assert not list(d.rglob("*.tmp")), "a temporary file was left behind"
    assert "hunter2" not in "".join(p.read_text(errors="ignore") for p in d.rglob("*.yaml"))


def test_ablation_planning_never_runs_a_checkpoint(case_dir: Path) -> None:
    """`metods ablate` reads each run's checkpoints while planning; a malicious one is reported
    as unreadable and its payload does not run."""
    from metods_core.ablation.state import _latest_readable_checkpoint

    _malicious_last(case_dir)
    step, path, error = _latest_readable_checkpoint(case_dir / "run")
    assert (step, path) == (2, case_dir / "run/checkpoints/step=000002.ckpt")
    for name in ("step=000002.ckpt", "step=000001.ckpt"):
        write_malicious(case_dir / "run/checkpoints" / name, case_dir / "marker")
    step, path, error = _latest_readable_checkpoint(case_dir / "run")
    assert (step, path) == (0, None) and "refused without running anything" in error
    assert not (case_dir / "marker").exists()


def test_evaluation_never_replaced_by_an_empty_one(
    case_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """An evaluation that produced no metrics is an error, and evaluation.json stays."""
    _evaluation(case_dir)
    before = (case_dir / "run/evaluation.json").read_bytes()
    monkeypatch.setattr("metods_core.evaluation.meta_test", lambda *args, **kwargs: {})
    assert main(["evaluate", str(case_dir / "run"), "--episodes", "4"]) == 2
    assert "produced no metrics" in capsys.readouterr().err
    assert (case_dir / "run/evaluation.json").read_bytes() == before
