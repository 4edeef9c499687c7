"""Machinery shared by the conformance suites: config checks, state leaves, running a suite."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
import yaml
from omegaconf import OmegaConf
from pydantic import ValidationError

from metods_core.interfaces import ComponentConfig, State

BATCH = 3
"""Tasks per batch in every check: small, and not 1 so that batching bugs show."""
STEPS = 4
"""Environment steps that the rule and meta-optimizer checks run."""
UNKNOWN_KEY = "metods_conformance_unknown_key"
"""A configuration key no component defines, to check that typos are rejected."""


def build_config(cls: type, overrides: Mapping[str, Any]) -> ComponentConfig:
    """Return ``cls.Config`` validated from ``overrides``, with a clear failure message."""
    config_cls = getattr(cls, "Config", None)
    assert isinstance(config_cls, type) and issubclass(config_cls, ComponentConfig), (
        f"{cls.__name__}.Config must be a subclass of metods_core.interfaces.ComponentConfig, "
        f"got {config_cls!r}"
    )
    try:
        return config_cls.model_validate(dict(overrides))
    except ValidationError as exc:
        raise AssertionError(
            f"{cls.__name__}.Config could not be built from {dict(overrides)!r} "
            f"(pass the values it needs as config overrides): {exc}"
        ) from exc


def check_config_round_trip(cls: type, /, **config: Any) -> None:
    """The config survives ``model_dump`` -> YAML -> ``model_validate`` (pyyaml and OmegaConf).

    That is the path of a recipe: a saved run directory's resolved recipe must reload exactly.
    """
    built = build_config(cls, config)
    data = built.model_dump(mode="json")
    via_yaml = yaml.safe_load(yaml.safe_dump(data))
    reloaded = type(built).model_validate(via_yaml)
    assert reloaded == built, (
        f"{cls.__name__}.Config changed through a YAML round trip: {built!r} -> {reloaded!r}"
    )
    via_omegaconf = OmegaConf.to_container(
        OmegaConf.create(OmegaConf.to_yaml(OmegaConf.create(data))), resolve=True
    )
    reloaded = type(built).model_validate(via_omegaconf)
    assert reloaded == built, (
        f"{cls.__name__}.Config changed through an OmegaConf round trip: {built!r} -> {reloaded!r}"
    )


def check_config_strict(cls: type, /, **config: Any) -> None:
    """The config rejects unknown keys and documents every field (shown by ``metods show``)."""
    built = build_config(cls, config)
    config_cls = type(built)
    data = {**built.model_dump(), UNKNOWN_KEY: 1}
    try:
        config_cls.model_validate(data)
    except ValidationError:
        pass
    else:
        raise AssertionError(
            f"{cls.__name__}.Config accepted the unknown key {UNKNOWN_KEY!r}: set "
            "extra='forbid' (inherit metods_core.interfaces.ComponentConfig) so typos fail"
        )
    undocumented = [
        name for name, field in config_cls.model_fields.items() if not field.description
    ]
    assert not undocumented, (
        f"{cls.__name__}.Config fields without a description: {', '.join(undocumented)}; "
        "give each an attribute docstring (use_attribute_docstrings=True)"
    )


CONFIG_CHECKS: dict[str, Callable[..., None]] = {
    "config_round_trip": check_config_round_trip,
    "config_strict": check_config_strict,
}
"""The config checks every suite starts with."""


def state_leaves(state: State) -> list[torch.Tensor]:
    """Return the tensors of a plastic state in a fixed order (tensor, tuple, dict or None)."""
    if state is None:
        return []
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, Mapping):
        return [leaf for key in sorted(state) for leaf in state_leaves(state[key])]
    if isinstance(state, tuple | list):
        return [leaf for part in state for leaf in state_leaves(part)]
    raise AssertionError(
        f"plastic state leaves must be tensors (or tuples, NamedTuples, dicts of them), "
        f"got {type(state).__name__}"
    )


def equal_fields(first: Any, second: Any, skip: tuple[str, ...] = ()) -> bool:
    """Return whether two dataclass instances have equal fields (tensors compared exactly)."""
    for field in dataclasses.fields(first):
        if field.name in skip:
            continue
        a, b = getattr(first, field.name), getattr(second, field.name)
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            if not (
                isinstance(a, torch.Tensor)
                and isinstance(b, torch.Tensor)
                and a.shape == b.shape
                and torch.equal(a, b)
            ):
                return False
        elif a != b:
            return False
    return True


def gradient_problems(module: torch.nn.Module) -> list[str]:
    """Return one line per trainable parameter whose gradient is missing, non-finite or zero."""
    problems = []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            if parameter.grad is not None:
                problems.append(f"{name}: frozen (requires_grad=False) but got a gradient")
            continue
        if parameter.grad is None:
            problems.append(f"{name}: no gradient")
        elif not torch.isfinite(parameter.grad).all():
            problems.append(f"{name}: non-finite gradient")
        elif not parameter.grad.abs().sum() > 0:
            problems.append(f"{name}: gradient is identically zero")
    return problems


def run_suite(
    suite: str, checks: Mapping[str, Callable[..., None]], *args: Any, **config: Any
) -> None:
    """Run every check of ``checks``; raise one AssertionError that lists every failure.

    Args:
        suite: what is checked, for the message (``"plasticity rule MetODSRule"``).
        checks: the suite, name -> check.
        *args: positional arguments of every check (the class, an action space...).
        **config: config overrides passed to every check.
    """
    failures: list[str] = []
    first: BaseException | None = None
    for name, check in checks.items():
        try:
            check(*args, **config)
        except Exception as exc:  # report every broken check of third-party code at once
            failures.append(f"- {name}: {type(exc).__name__}: {exc}")
            first = first or exc
    if failures:
        raise AssertionError(
            f"{suite} failed {len(failures)} of {len(checks)} conformance checks:\n"
            + "\n".join(failures)
        ) from first
