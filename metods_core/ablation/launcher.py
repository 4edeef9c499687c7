"""The launcher interface: how an ablation's runs get executed (local processes, SLURM, ...).

Modelled on Hydra's ``hydra/plugins/launcher.py``: the runner plans every run and decides from
its directory what it still needs; a launcher only executes that (train or resume, then
evaluate) and reports each run's outcome as it ends. Launchers are found through the
entry-point group ``metods.launchers`` like every other component, so a Ray or Kubernetes
launcher can be a third-party plugin: subclass ``Launcher``, give it a ``Config``, register it.
``metods_core.ablation.jobs`` has the helpers every launcher needs (the commands of a run,
running them on any machine, turning their exit into a ``RunOutcome``).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from metods_core.interfaces.config import ComponentConfig

if TYPE_CHECKING:  # the runner's types; importing them here would be circular
    from metods_core.ablation.plan import PlannedRun
    from metods_core.ablation.state import Decision, RunOutcome


@dataclasses.dataclass(frozen=True)
class PendingRun:
    """A run that still needs work, and what work (never ``skip``, ``broken`` or ``conflict``)."""

    run: PlannedRun
    decision: Decision


@dataclasses.dataclass(frozen=True)
class LaunchContext:
    """What the runner gives a launcher besides the runs."""

    out: Path
    """The ablation's output folder (its runs are under ``out/runs``)."""
    lock_fd: int | None
    """The ablation's lock; local child processes may inherit it to keep it held."""
    on_done: Callable[[RunOutcome], None]
    """Call once per run, as soon as it ends (the runner rewrites the reports each time)."""
    echo: Callable[[str], None]
    """Progress messages for the user."""


class Launcher(abc.ABC):
    """Executes an ablation's pending runs and reports each outcome."""

    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    """The launcher's options, validated from the ablation file's ``launcher:`` section."""

    def __init__(self, config: ComponentConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def threads_per_run(self) -> int:
        """Return the torch threads each run's processes may use (becomes trainer.num_threads)."""

    @abc.abstractmethod
    def launch(self, runs: Sequence[PendingRun], context: LaunchContext) -> None:
        """Run every pending run to its end, calling ``context.on_done`` as each one ends."""

    def describe(self) -> str:
        """Say in a few words how runs are executed (shown when the ablation starts)."""
        return type(self).__name__
