"""The ``metods ablate`` options that choose and configure a launcher (argparse only).

Kept apart from ``metods_core.ablation`` so that ``metods --help`` imports nothing heavy; the
options are validated later, against the launcher's ``Config``
(``metods_core.ablation.launcher_options``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import yaml

from metods_core.errors import MetodsError

_FLAGS: dict[str, tuple[str, type, str]] = {  # CLI flag -> (option, type, help)
    "--jobs": ("jobs", int, "local launcher: runs at a time (default: 1)"),
    "--partition": ("partition", str, "submitit: SLURM partition"),
    "--time-min": ("time_min", int, "submitit: time limit of each run's job, in minutes"),
    "--gpus-per-run": ("gpus_per_run", int, "submitit: GPUs of each run's job"),
    "--cpus-per-run": ("cpus_per_run", int, "submitit: CPUs (and torch threads) per run"),
    "--array-parallelism": ("array_parallelism", int, "submitit: runs at a time"),
}


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--launcher``, the common launcher options and ``--launcher-option`` to ``parser``."""
    parser.add_argument(
        "--launcher",
        metavar="NAME",
        help="how runs are executed: local (default) or submitit (SLURM), or a launcher plugin",
    )
    for flag, (_, kind, text) in _FLAGS.items():
        parser.add_argument(flag, type=kind, help=text)
    parser.add_argument(
        "--launcher-option",
        action="append",
        default=[],
        metavar="key=value",
        help="any other option of the launcher, e.g. account=lab (repeatable; values are YAML)",
    )


def launcher_overrides(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """Return the launcher named on the command line (or None) and the options given there."""
    options: dict[str, Any] = {}
    for flag, (option, _, _) in _FLAGS.items():
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            options[option] = value
    for item in args.launcher_option:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise MetodsError(f"--launcher-option {item!r} is not of the form key=value")
        options[key] = yaml.safe_load(text)
    return args.launcher, options


def launcher_flags(name: str | None, options: Mapping[str, Any]) -> list[str]:
    """Return the command-line form of ``name`` and ``options`` (for the recorded command)."""
    flags = [] if name is None else [f"--launcher={name}"]
    by_option = {option: flag for flag, (option, _, _) in _FLAGS.items()}
    for key, value in options.items():
        shown = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        flag = by_option.get(key)
        flags.append(f"{flag}={shown}" if flag else f"--launcher-option={key}={shown}")
    return flags
