"""Meta-optimizer checks that train inside a tiny real Lightning trainer (one process or DDP).

Each check takes the meta-optimizer's class and config overrides, like every check of the
suite. The runs are those of ``metods_core.testing._lightning``: ``MAX_STEPS`` outer steps of
the fakes on the CPU, checkpointing every ``RESUME_AT`` outer steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from metods_core.interfaces import MetaOptimizer
from metods_core.run_folder import RunFolder
from metods_core.testing._ddp_worker import run_ddp
from metods_core.testing._lightning import (
    MAX_STEPS,
    RESUME_AT,
    stopped_and_resumed_run,
    uninterrupted_run,
)
from metods_core.training.checkpoints import PERIODIC_KEPT


def differences(first: Any, second: Any, path: str = "") -> list[str]:
    """Return the paths where two nests of dicts, lists, tensors and numbers differ (exactly)."""
    if isinstance(first, torch.Tensor) or isinstance(second, torch.Tensor):
        same = (
            isinstance(first, torch.Tensor)
            and isinstance(second, torch.Tensor)
            and first.shape == second.shape
            and first.dtype == second.dtype
            and torch.equal(first, second)
        )
        return [] if same else [path or "<root>"]
    if isinstance(first, Mapping) and isinstance(second, Mapping):

        def join(key: Any) -> str:
            return f"{path}.{key}" if path else str(key)

        found = [join(key) for key in first.keys() ^ second.keys()]
        for key in first.keys() & second.keys():
            found += differences(first[key], second[key], join(key))
        return sorted(found)
    if isinstance(first, Sequence) and isinstance(second, Sequence) and not isinstance(first, str):
        if len(first) != len(second):
            return [path or "<root>"]
        return [
            found
            for index, (a, b) in enumerate(zip(first, second, strict=True))
            for found in differences(a, b, f"{path}[{index}]")
        ]
    return [] if first == second else [path or "<root>"]


def _listing(paths: list[str], limit: int = 8) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def check_outer_steps_match_max_steps(cls: type[MetaOptimizer], /, **config: Any) -> None:
    """A run of ``trainer.max_steps`` outer steps calls ``training_step`` that many times and
    checkpoints on the outer-step clock, however many optimizer steps each outer step takes."""
    run = uninterrupted_run(cls, config)
    assert run.calls == MAX_STEPS, (
        f"trainer.max_steps={MAX_STEPS} called training_step {run.calls} times"
    )
    periodic = list(range(RESUME_AT, MAX_STEPS + 1, RESUME_AT))[-PERIODIC_KEPT:]
    folder = RunFolder(Path("run"))
    expected = {folder.last_checkpoint.name: MAX_STEPS}
    expected |= {folder.periodic_checkpoint(step).name: step for step in periodic}
    assert run.outer_steps == expected, (
        f"checkpoints every {RESUME_AT} of {MAX_STEPS} outer steps should be {expected} "
        f"(file -> saved outer_step), got {run.outer_steps}"
    )


def check_parameters_change(cls: type[MetaOptimizer], /, **config: Any) -> None:
    """Training changes the meta-parameters (some of them) and keeps them all finite."""
    run = uninterrupted_run(cls, config)
    final = {
        name.removeprefix("agent."): value
        for name, value in run.final["state_dict"].items()
        if name.startswith("agent.")
    }
    assert final.keys() == run.initial.keys(), (
        f"the checkpoint holds agent entries {sorted(final)}, the agent had {sorted(run.initial)}"
    )
    non_finite = [
        name
        for name, value in final.items()
        if value.is_floating_point() and not torch.isfinite(value).all()
    ]
    assert not non_finite, f"meta-parameters became non-finite: {_listing(non_finite)}"
    changed = [name for name in final if not torch.equal(final[name], run.initial[name])]
    assert changed, (
        f"{MAX_STEPS} outer steps left every meta-parameter unchanged: training_step must "
        "update the agent (batch.optimizer.step() after batch.backward(loss))"
    )


def check_resume_equals_uninterrupted(cls: type[MetaOptimizer], /, **config: Any) -> None:
    """Stopping at ``RESUME_AT`` outer steps and resuming to ``MAX_STEPS`` ends bit-identical
    to an uninterrupted run: every meta-parameter, the optimizer state and the outer step.

    A meta-optimizer that keeps state of its own (running statistics, a step counter) must keep
    it in the module or optimizer state that checkpoints save.
    """
    uninterrupted = uninterrupted_run(cls, config)
    resumed = stopped_and_resumed_run(cls, config)
    assert resumed.calls == MAX_STEPS - RESUME_AT, (
        f"resuming at outer step {RESUME_AT} of {MAX_STEPS} called training_step "
        f"{resumed.calls} times, not {MAX_STEPS - RESUME_AT}"
    )
    problems = []
    for key in ("state_dict", "optimizer_states", "outer_step"):
        found = differences(uninterrupted.final.get(key), resumed.final.get(key), key)
        if found:
            problems.append(_listing(found))
    assert not problems, (
        f"stopping at outer step {RESUME_AT} and resuming to {MAX_STEPS} differs from an "
        f"uninterrupted run in: {'; '.join(problems)}. State kept outside the agent and the "
        "optimizer (for example on the meta-optimizer object) is lost on resume, and so is "
        "randomness not drawn from batch.generator"
    )


def check_ddp_ranks_agree(cls: type[MetaOptimizer], /, **config: Any) -> None:
    """On 2-process CPU DDP, where each rank trains on its own tasks, both ranks end with
    identical meta-parameters (gradients go through ``batch.backward``; anything computed by
    hand goes through ``batch.all_reduce``)."""
    ranks = run_ddp(cls, config)
    for rank, record in enumerate(ranks):
        assert record["world_size"] == 2 and record["calls"] == MAX_STEPS, (
            f"rank {rank} ran {record['calls']} outer steps in a world of "
            f"{record['world_size']}; expected {MAX_STEPS} in a world of 2"
        )
    assert ranks[0]["tasks"] != ranks[1]["tasks"], (
        "both ranks trained on the same tasks, so this check could not tell them apart"
    )
    found = differences(ranks[0]["final"], ranks[1]["final"])
    if found:
        gap = max(
            [
                float((ranks[0]["final"][name] - ranks[1]["final"][name]).abs().max())
                for name in found
                if name in ranks[0]["final"] and ranks[0]["final"][name].is_floating_point()
            ]
            or [float("nan")]
        )
        raise AssertionError(
            f"after {MAX_STEPS} outer steps on 2 DDP ranks the meta-parameters differ between "
            f"ranks (largest gap {gap:.3g}) in: {_listing(found)}. Reduce every quantity that "
            "is computed by hand from a rank's own tasks with batch.all_reduce, and compute "
            "gradients with batch.backward"
        )
