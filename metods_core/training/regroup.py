"""Fit a checkpoint's optimizer state, and then its settings, to what a resumed recipe asks for.

An optimizer's state dict keys each parameter's moments by its position across the groups,
and the groups by their order. A resume that changes a learning-rate multiplier of the rule
(``plasticity.coefficient_lr_scale``, for example) changes the groups: parameters that shared
the base rate now form a group of their own. The meta-optimizers give the parameters with
their names (``Agent.parameter_groups``), so the state dict records them (``param_names``);
this moves each parameter's moments to its place in the new groups. The groups' settings
(``lr`` and the rest) are the recipe's, set again after the restore by
``ApplyOptimizerSettings``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from metods_core.errors import MetodsError

_RESTART = "start a new run for this change, or resume without it"


def _group_names(groups: list[dict[str, Any]]) -> list[list[str]] | None:
    """Each group's parameter names, or None if any group has none recorded."""
    if not all("param_names" in group for group in groups):
        return None
    return [list(group["param_names"]) for group in groups]


def regroup_optimizer_state(
    saved: dict[str, Any], current: torch.optim.Optimizer
) -> dict[str, Any]:
    """Return the optimizer state dict ``saved`` arranged into ``current``'s parameter groups.

    ``saved`` is returned as is when its groups hold the same parameters, in the same order,
    as ``current``'s (the usual resume). Otherwise each parameter's state (Adam's moments and
    step count) moves to the parameter of the same name; each group takes ``current``'s
    settings.

    Raises:
        MetodsError: the groups differ and the checkpoint recorded no parameter names (it was
            written before they were recorded), or the two hold different parameters.
    """
    now = _group_names(current.param_groups)
    before = _group_names(saved["param_groups"])
    if before is not None and before == now:
        return saved
    if before is None or now is None:
        sizes = [len(group["params"]) for group in saved["param_groups"]]
        if sizes == [len(group["params"]) for group in current.param_groups]:
            return saved  # unnamed, same shape: torch loads it position by position
        raise MetodsError(
            "the recipe groups the meta-parameters' learning rates differently from the "
            "checkpoint, whose optimizer state has no parameter names to regroup by (it was "
            f"written by an earlier metods): {_RESTART}"
        )
    flat_before = [name for names in before for name in names]
    flat_now = [name for names in now for name in names]
    if sorted(flat_before) != sorted(flat_now):
        missing = sorted(set(flat_now) - set(flat_before))
        extra = sorted(set(flat_before) - set(flat_now))
        raise MetodsError(
            "the checkpoint's optimizer holds other meta-parameters than the recipe's "
            f"(not in the checkpoint: {missing or 'none'}; only in the checkpoint: "
            f"{extra or 'none'}): {_RESTART}"
        )
    state_by_name: dict[str, Any] = {}
    for group in saved["param_groups"]:
        for index, name in zip(group["params"], group["param_names"], strict=True):
            if index in saved["state"]:
                state_by_name[name] = saved["state"][index]
    groups: list[dict[str, Any]] = []
    state: dict[int, Any] = {}
    position = 0
    for group, names in zip(current.param_groups, now, strict=True):
        indices = list(range(position, position + len(names)))
        position += len(names)
        settings = {key: value for key, value in group.items() if key != "params"}
        groups.append({**settings, "params": indices})
        pairs = zip(indices, names, strict=True)
        state.update({index: state_by_name[name] for index, name in pairs if name in state_by_name})
    return {"state": state, "param_groups": groups}


class ApplyOptimizerSettings(Callback):
    """After Lightning restored the optimizer, set its hyper-parameters from the recipe.

    Lightning's restore brings back each param group's ``lr`` and other settings with the
    moments, so a learning rate changed on resume would be ignored. This builds the optimizer the
    recipe asks for now and copies every setting but ``params`` group by group into the
    restored one: the moments stay, the recipe's rate (with the rule's per-group lr scales)
    applies.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Copy the recipe's optimizer settings into the restored optimizer."""
        fresh = pl_module.configure_optimizers()
        restored = trainer.optimizers[0]
        if not isinstance(fresh, torch.optim.Optimizer):
            return  # only the one-optimizer form is used by metods' module
        # The groups match: the module's on_load_checkpoint regrouped the saved state.
        for new, old in zip(fresh.param_groups, restored.param_groups, strict=True):
            old.update({key: value for key, value in new.items() if key != "params"})
