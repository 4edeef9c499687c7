"""Resume semantics: changed optimizer settings take effect, the history is kept, and a
diverged run recovers from its last finite checkpoint with a lower learning rate."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from metods_core.cli import main
from metods_core.recipe import load_recipe
from metods_core.training import NonFiniteError, resume_run, train_recipe
from metods_core.training.checkpoints import checkpoint_outer_step, read_checkpoint
from metods_core.training.run_dir import read_run_recipe

HARLOW = Path(__file__).resolve().parents[2] / "recipes" / "harlow" / "metods.yaml"
TINY = [
    "trainer.max_steps=2",
    "data.batch_tasks=4",
    "plasticity.recursion_steps=1",
    "plasticity.write=linear",  # a write projection P, for its learning-rate multiplier
    "trainer.compile=false",
    "logger.wandb.mode=disabled",
    "trainer.num_threads=1",
    "trainer.checkpoint_every_n_steps=1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained for 2 outer steps."""
    run = tmp_path_factory.mktemp("resume") / "run"
    train_recipe(load_recipe(HARLOW, TINY), run)
    return run


def _copy(trained: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(trained, tmp_path / name))


def _last(run: Path) -> dict:
    return read_checkpoint(run / "checkpoints" / "last.ckpt")


def test_changed_learning_rate_is_applied_with_the_group_scales(
    trained: Path, tmp_path: Path
) -> None:
    """A resume with meta_optimizer.lr=0.3 trains with 0.3 (times each group's scale), not
    with the restored 3e-3, and so ends with other weights than a plain resume."""
    plain, faster = _copy(trained, tmp_path, "plain"), _copy(trained, tmp_path, "faster")
    resume_run(plain, ["trainer.max_steps=3"])
    resume_run(faster, ["trainer.max_steps=3", "meta_optimizer.lr=0.3"])
    old = [g["lr"] for g in _last(plain)["optimizer_states"][0]["param_groups"]]
    new = [g["lr"] for g in _last(faster)["optimizer_states"][0]["param_groups"]]
    base = load_recipe(HARLOW, TINY).meta_optimizer.config.lr
    assert new == pytest.approx([rate * 0.3 / base for rate in old])
    first, second = _last(plain)["state_dict"], _last(faster)["state_dict"]
    assert any(not torch.equal(first[key], second[key]) for key in first)


def test_resume_history_keeps_the_original_recipe(trained: Path, tmp_path: Path) -> None:
    """recipe.yaml stays as the run began; resumes.yaml lists each resume's step and
    overrides; the run's current recipe applies them in order."""
    run = _copy(trained, tmp_path, "run")
    original = (run / "recipe.yaml").read_bytes()
    resume_run(run, ["trainer.max_steps=3", "meta_optimizer.lr=0.01"])
    resume_run(run, ["trainer.max_steps=4"])
    assert (run / "recipe.yaml").read_bytes() == original
    history = yaml.safe_load((run / "resumes.yaml").read_text())
    assert [entry["outer_step"] for entry in history] == [2, 3]
    assert history[0]["overrides"] == ["trainer.max_steps=3", "meta_optimizer.lr=0.01"]
    current = read_run_recipe(run)
    assert current.trainer.max_steps == 4 and current.meta_optimizer.config.lr == 0.01
    assert checkpoint_outer_step(_last(run)) == 4


def test_diverged_run_recovers_with_a_lower_rate(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """lr=1e3 makes the logits non-finite: one error line, exit 2, the last checkpoint stays
    finite; resuming from it with the original rate trains on to the budget."""
    run = _copy(trained, tmp_path, "run")
    diverge = ["meta_optimizer.lr=1e3", "trainer.max_steps=8", "trainer.checkpoint_every_n_steps=8"]
    with pytest.raises(NonFiniteError, match="non-finite at outer step"):
        resume_run(run, diverge)
    assert checkpoint_outer_step(_last(run)) == 2  # nothing non-finite was saved
    code = main(["train", "--resume", str(run), "meta_optimizer.lr=3e-3"])
    assert code == 0, capsys.readouterr().err[-2000:]
    last = _last(run)
    assert checkpoint_outer_step(last) == 8
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


@pytest.mark.parametrize(
    ("change", "regrouped"),
    [
        ("plasticity.coefficient_lr_scale=0.5", ["rule.kappa.0", "rule.beta.0"]),
        ("plasticity.projection_lr_scale=0.25", ["rule.projection.weight"]),
    ],
)
def test_a_rule_rate_change_regroups_the_saved_moments(
    trained: Path, tmp_path: Path, change: str, regrouped: list[str]
) -> None:
    """A rule's learning-rate multiplier may change on resume: the parameters it scales form a
    group of their own at the scaled rate, and every parameter keeps its Adam moments."""
    run = _copy(trained, tmp_path, "run")
    before = _last(run)["optimizer_states"][0]
    resume_run(run, ["trainer.max_steps=3", change])
    after = _last(run)["optimizer_states"][0]
    groups = {tuple(group["param_names"]): group["lr"] for group in after["param_groups"]}
    base = load_recipe(HARLOW, TINY).meta_optimizer.config.lr
    scale = float(change.split("=")[1])
    assert groups[tuple(regrouped)] == pytest.approx(base * scale)
    assert sum(len(names) for names in groups) == sum(
        len(group["params"]) for group in before["param_groups"]
    )
    step = {
        name: float(after["state"][index]["step"])
        for group in after["param_groups"]
        for index, name in zip(group["params"], group["param_names"], strict=True)
    }
    assert set(step.values()) == {3.0}  # two saved steps and one more, in every group
    assert read_run_recipe(run).plasticity.config.coefficient_lr_scale == (
        scale if "coefficient" in change else 1.0
    )


def test_the_critic_s_gradient_share_may_change_on_resume(trained: Path, tmp_path: Path) -> None:
    """agent.value_gradient scales a gradient only: a resume may set it, and it takes effect
    (other weights than a plain resume); the agent's shape stays fixed."""
    plain, cut = _copy(trained, tmp_path, "plain"), _copy(trained, tmp_path, "cut")
    resume_run(plain, ["trainer.max_steps=3"])
    resume_run(cut, ["trainer.max_steps=3", "agent.value_gradient=0"])
    assert read_run_recipe(cut).agent.value_gradient == 0.0
    first, second = _last(plain)["state_dict"], _last(cut)["state_dict"]
    assert any(not torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize("checkpoint", ["last.ckpt", "step=000001.ckpt"])
def test_progress_bar_counts_from_the_resumed_step(
    trained: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], checkpoint: str
) -> None:
    """After a resume, the bar's first "Outer steps" draw reads the resumed step of 4, and
    every draw after it reads "Outer steps" from there to 4, none with a negative rate.
    Before, it first drew 0/4 at ``-74065.54it/s``; and from step 1's checkpoint, saved
    mid-epoch (where Lightning skips ``on_train_epoch_start``), it read ``Training: 1/?``.
    Lightning's own hooks draw once before the bar is positioned; a terminal overwrites it."""
    run = _copy(trained, tmp_path, "run")
    start = checkpoint_outer_step(read_checkpoint(run / "checkpoints" / checkpoint))
    capfd.readouterr()
    resume_run(run, ["trainer.max_steps=4"], checkpoint=run / "checkpoints" / checkpoint)
    output = capfd.readouterr()
    draws = re.findall(
        r"[^\r\n]*?(?:Outer steps|Training|Epoch \d+):[^\r\n]*", output.out + output.err
    )
    first = next((i for i, draw in enumerate(draws) if draw.startswith("Outer steps")), None)
    assert first is not None, draws
    positioned = draws[first:]
    assert all(draw.startswith("Outer steps") for draw in positioned), positioned
    steps = [int(re.search(r"\| (\d+)/4 ", draw).group(1)) for draw in positioned]  # type: ignore[union-attr]
    assert steps[0] == start and min(steps) == start and max(steps) == 4, positioned
    assert not any("-" in draw.split("[", 1)[1] for draw in positioned), positioned
