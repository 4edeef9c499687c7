"""The W&B run id file is written by global rank 0 only."""

from __future__ import annotations

from pathlib import Path

import pytest

from metods_core.recipe import load_recipe
from metods_core.training.loggers import create_loggers

HARLOW = Path(__file__).resolve().parents[2] / "recipes" / "harlow" / "metods.yaml"


def test_only_rank_zero_writes_the_wandb_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-zero rank (a node started at the same moment) leaves the id file to rank 0."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    recipe = load_recipe(HARLOW, ["logger.wandb.mode=offline", "logger.csv=false"])
    create_loggers(recipe, tmp_path / "other", rank_zero=False)
    assert not (tmp_path / "other" / "wandb_id.txt").exists()
    create_loggers(recipe, tmp_path / "zero", rank_zero=True)
    first = (tmp_path / "zero" / "wandb_id.txt").read_text()
    create_loggers(recipe, tmp_path / "zero", rank_zero=False)
    assert (tmp_path / "zero" / "wandb_id.txt").read_text() == first
