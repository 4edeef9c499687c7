"""The bandit passes metods' task conformance suite (run: `pip install -e ".[test]"`, `pytest`)."""

import pytest
from metods_bandit import TwoArmedBandit

from metods_core.testing import TASK_CHECKS, check_task_sampler


@pytest.mark.parametrize("check", list(TASK_CHECKS))
def test_bandit_conforms(check: str) -> None:
    """Each check of the task suite, one test each, on one-episode lifetimes."""
    TASK_CHECKS[check](TwoArmedBandit, pulls=5)


def test_multi_episode_lifetimes_conform() -> None:
    """The whole suite (one report of every failure) on three episodes per lifetime."""
    check_task_sampler(TwoArmedBandit, pulls=4, episodes_per_lifetime=3)


def test_splits_share_no_bin() -> None:
    """Train and test tasks come from disjoint bins of p_0."""
    import torch

    sampler = TwoArmedBandit(TwoArmedBandit.Config(bins=10, test_every=5))
    generator = torch.Generator().manual_seed(0)
    train = sampler.sample(500, "train", generator).probabilities[:, 0]
    test = sampler.sample(500, "test", generator).probabilities[:, 0]
    assert not set((train * 10).long().tolist()) & set((test * 10).long().tolist())
