"""A two-armed bandit task family for metods (Wang et al. 2016, "Learning to reinforcement
learn", arXiv 1611.05763): the worked example of docs/writing-tasks.md."""

from metods_bandit.bandit import BanditEnv, BanditTaskBatch, TwoArmedBandit

__all__ = ["BanditEnv", "BanditTaskBatch", "TwoArmedBandit"]
