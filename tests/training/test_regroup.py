"""regroup_optimizer_state: a checkpoint's Adam moments follow their parameters into new groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metods_core.errors import MetodsError
from metods_core.training.regroup import regroup_optimizer_state


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


def _stepped(net: nn.Module, groups: list[list[str]]) -> torch.optim.Adam:
    """Adam over ``net`` with one group per list of parameter names, after two steps."""
    named = dict(net.named_parameters())
    optimizer = torch.optim.Adam(
        [{"params": [(name, named[name]) for name in names], "lr": 1e-2} for names in groups]
    )
    for _ in range(2):
        optimizer.zero_grad()
        net(torch.ones(5, 3)).pow(2).sum().backward()
        optimizer.step()
    return optimizer


def _fresh(net: nn.Module, groups: list[list[str]], names: bool = True) -> torch.optim.Adam:
    named = dict(net.named_parameters())
    return torch.optim.Adam(
        [
            {"params": [(n, named[n]) if names else named[n] for n in group], "lr": 1e-3}
            for group in groups
        ]
    )


ONE = [["0.weight", "0.bias", "1.weight", "1.bias"]]
TWO = [["0.weight", "1.weight", "1.bias"], ["0.bias"]]


def test_same_groups_are_returned_unchanged() -> None:
    net = _net()
    saved = _stepped(net, ONE).state_dict()
    assert regroup_optimizer_state(saved, _fresh(net, ONE)) is saved


def test_each_parameter_keeps_its_moments_in_the_new_groups() -> None:
    """One group saved, two asked for: loading the regrouped state gives every parameter the
    exact moments and step count it had, and each group the new optimizer's rate."""
    net = _net()
    before = _stepped(net, ONE)
    fresh = _fresh(net, TWO)
    fresh.load_state_dict(regroup_optimizer_state(before.state_dict(), fresh))
    assert [len(group["params"]) for group in fresh.param_groups] == [3, 1]
    assert [group["lr"] for group in fresh.param_groups] == [1e-3, 1e-3]
    for parameter in net.parameters():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fresh.state[parameter][key], before.state[parameter][key]), key


def test_unnamed_state_loads_when_it_fits_and_is_refused_with_advice_otherwise() -> None:
    net = _net()
    saved = _stepped(net, ONE).state_dict()
    for group in saved["param_groups"]:
        del group["param_names"]  # as a checkpoint of an earlier metods
    with pytest.raises(MetodsError, match="no parameter names.*start a new run"):
        regroup_optimizer_state(saved, _fresh(net, TWO))
    unnamed_same = _fresh(net, ONE, names=False)
    assert regroup_optimizer_state(saved, unnamed_same) is saved
    named_same = _fresh(net, ONE)  # an earlier checkpoint, same groups: resumes as before
    named_same.load_state_dict(regroup_optimizer_state(saved, named_same))
    assert named_same.param_groups[0]["param_names"] == ONE[0]


def test_other_parameters_are_refused() -> None:
    net = _net()
    saved = _stepped(net, ONE).state_dict()
    saved["param_groups"][0]["param_names"][3] = "2.bias"
    with pytest.raises(MetodsError, match=r"not in the checkpoint: \['1.bias'\]"):
        regroup_optimizer_state(saved, _fresh(net, TWO))
