"""The run folder's layout: the one place that knows where a run keeps each of its files.

Every reader and writer (training, checkpoints, loggers, resume, evaluation, plots, ablation)
asks a :class:`RunFolder` for its paths; no other module spells a file name of the run folder.

Layout::

    RUN_DIR/
      recipe.yaml                  the fully resolved recipe the run was started with
      resumes.yaml                 each resume: outer step, checkpoint, overrides (absent if none)
      versions.json                Python, torch, Lightning, metods and every installed plugin
      checkpoints/last.ckpt        the latest checkpoint; step=NNNNNN.ckpt the periodic ones
      checkpoints/best.ckpt        with trainer.keep_best: the best smoothed training return
      logs/version_K/metrics.csv   one CSV log per (re)start of the run
      wandb/, wandb_id.txt         the W&B run (offline unless asked otherwise) and its id
      evaluation[<tag>].json       the meta-test summary (<tag>: the evaluation's overrides)
      training_curve.png           the training curve, drawn by the evaluation
      <curve>[<tag>].png/.csv      each per-index curve of the evaluation
      impairment[<tag>].json       with MuJoCo runs, the returns intact and with each actuator
                                   disabled (<tag>: checkpoint and memory lesion), written by
                                   ``metods impairment`` and an ablation with impairment: true

An ablation keeps beside each run folder ``runs/<name>``: ``<name>.log`` (the output of the
run's ``metods train``, ``metods evaluate`` and ``metods impairment``), ``<name>.status.json``
(the launcher's record) and ``<name>.lock`` (held while a job runs it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LAST_CHECKPOINT = "last.ckpt"
"""The name of the latest checkpoint (a checkpoint given by path may have any name)."""
BEST_CHECKPOINT = "best.ckpt"
"""The name of the checkpoint of the best smoothed training return (``trainer.keep_best``)."""


def metric_key(name: str) -> str:
    """Return the key under which the evaluation writes the per-task metric ``name``.

    ``episode_reward`` (the reward of a whole lifetime) is reported as ``mean_reward``; every
    other metric keeps its name.
    """
    return "mean_reward" if name == "episode_reward" else name


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run's files; it creates and reads nothing itself.

    Args:
        path: the run folder (``--run-dir``, or ``runs/<name>-<time>``).
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        """The run's name: the folder's name."""
        return self.path.name

    @property
    def recipe(self) -> Path:
        """The resolved recipe the run was started with (never rewritten)."""
        return self.path / "recipe.yaml"

    @property
    def resumes(self) -> Path:
        """The history of the run's resumes."""
        return self.path / "resumes.yaml"

    @property
    def versions(self) -> Path:
        """The versions of the stack and of the installed plugins."""
        return self.path / "versions.json"

    @property
    def checkpoints(self) -> Path:
        """The folder of checkpoints."""
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        """The latest checkpoint."""
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def best_checkpoint(self) -> Path:
        """The checkpoint of the best smoothed training return (``trainer.keep_best``)."""
        return self.checkpoints / BEST_CHECKPOINT

    def periodic_checkpoint(self, step: int) -> Path:
        """The checkpoint saved at outer step ``step``."""
        return self.checkpoints / f"step={step:06d}.ckpt"

    def periodic_checkpoints(self) -> list[Path]:
        """The periodic checkpoints present, newest first."""
        return sorted(self.checkpoints.glob("step=*.ckpt"), reverse=True)

    @property
    def logs(self) -> Path:
        """Lightning's CSV logger's root (``save_dir`` and ``name`` below it)."""
        return self.path / "logs"

    def metrics_csvs(self) -> list[Path]:
        """Each (re)start's ``metrics.csv``, oldest first."""
        found = self.logs.glob("version_*/metrics.csv")
        return sorted(found, key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))

    @property
    def wandb_id(self) -> Path:
        """The W&B run id, so that a resume continues the same W&B run."""
        return self.path / "wandb_id.txt"

    def evaluation(self, tag: str = "") -> Path:
        """The evaluation summary; ``tag`` names the evaluation's overrides (``""``: none)."""
        return self.path / f"evaluation{tag}.json"

    def impairment(self, tag: str = "") -> Path:
        """The impairment record (``metods_core.impairment``); ``tag`` names its checkpoint and
        memory lesion (``""``: the last checkpoint, no lesion)."""
        return self.path / f"impairment{tag}.json"

    @property
    def training_curve(self) -> Path:
        """The training curve's plot."""
        return self.path / "training_curve.png"

    def curve(self, name: str, tag: str = "", suffix: str = ".png") -> Path:
        """The plot (``.png``) or table (``.csv``) of the evaluation's per-index curve."""
        return self.path / f"{name}{tag}{suffix}"

    def is_run(self) -> bool:
        """Whether the folder holds a run (it has the recipe written when a run starts)."""
        return self.recipe.is_file()

    @property
    def log(self) -> Path:
        """In an ablation: the output of the run's commands, beside the folder."""
        return self.path.parent / f"{self.name}.log"

    @property
    def status(self) -> Path:
        """In an ablation: the launcher's record of the run, beside the folder."""
        return self.path.parent / f"{self.name}.status.json"

    @property
    def lock(self) -> Path:
        """In an ablation: held while a job runs the run, beside the folder."""
        return self.path.parent / f"{self.name}.lock"
