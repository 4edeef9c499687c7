"""The task sampler's state in a checkpoint (the MuJoCo and Meta-World tasks' running observation
statistics): its key, and how a sampler gets it back. Saved by the ``TaskState`` callback;
without Lightning, so that ``metods evaluate`` reads it without loading Lightning."""

from __future__ import annotations

from typing import Any

TASK_STATE_KEY = "TaskState"
"""The entry of ``TaskState`` in a checkpoint's callback states (its Lightning ``state_key``;
the class's name, as checkpoints written before this constant have it)."""


def restore_state(sampler: Any, state: dict[str, Any]) -> None:
    """Give ``TaskState``'s saved ``state`` to ``sampler`` if both have one."""
    load = getattr(sampler, "load_state_dict", None)
    if callable(load) and "sampler" in state:
        load(state["sampler"])


def restore_task_state(sampler: Any, checkpoint: dict[str, Any]) -> None:
    """Restore the task sampler's state saved in a loaded ``checkpoint`` (if any)."""
    state = checkpoint.get("callbacks", {}).get(TASK_STATE_KEY)
    if state is not None:
        restore_state(sampler, state)
