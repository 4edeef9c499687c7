"""Worker processes that step a batch's simulators in parallel, each its own share of the batch.

With ``task.workers: W`` (the MuJoCo and Meta-World samplers) the simulators of every batch are
split into W contiguous shares (:func:`shares`), and each share lives and steps in its own worker
process. A worker holds one *stepper*, built in the worker by a picklable factory: an object that
lends simulators to groups (one group per batched env, by an integer id) and steps a group at
once. The parent calls a method of the steppers with :meth:`SimulatorWorkers.call`: it sends
every worker its arguments first and then collects the replies in order, so the W shares step
concurrently. Only numpy arrays and plain values cross the pipes; torch stays in the parent.

Unlike Gymnasium's ``AsyncVectorEnv`` (``vector_strategy: async``: one process per simulator,
so one round trip per simulator and step), W is chosen for the cores, not the batch: 16 tasks on
2 workers are two shares of 8, each stepped in turn inside its worker.

:class:`InProcessSteppers` gives a stepper built in the parent the same ``call`` interface
(one share), so a batched env is written once for both.
"""

from __future__ import annotations

import itertools
import multiprocessing
import traceback
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

_JOIN_SECONDS = 5.0
_GROUP_IDS = itertools.count()


class SimulatorWorkerError(RuntimeError):
    """A worker's stepper raised, or a worker process died."""


class Steppers(Protocol):
    """Where a batched env's simulators live: in this process, or in worker processes."""

    @property
    def count(self) -> int:
        """How many shares the batch is split into."""

    def call(self, method: str, arguments: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Call ``method`` of the first ``len(arguments)`` steppers, the i-th with
        ``arguments[i]``; return their results in order."""

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called (no call is answered after it)."""

    def close(self) -> None:
        """Stop the steppers' processes, if any."""


def shares(size: int, count: int) -> list[slice]:
    """Split ``range(size)`` into at most ``count`` contiguous, non-empty slices whose sizes
    differ by at most one (the first ones take the remainder)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    base, extra = divmod(size, count)
    slices, start = [], 0
    for index in range(min(count, size)):
        stop = start + base + (index < extra)
        slices.append(slice(start, stop))
        start = stop
    return slices


class InProcessSteppers:
    """One stepper in this process, behind the ``Steppers`` interface (a single share)."""

    def __init__(self, stepper: Any) -> None:
        self.stepper = stepper

    @property
    def count(self) -> int:
        """One share: the whole batch."""
        return 1

    def call(self, method: str, arguments: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Call ``method`` of the stepper with ``arguments[0]``."""
        if len(arguments) != 1:
            raise ValueError(f"one share in process, got {len(arguments)} argument tuples")
        return [getattr(self.stepper, method)(*arguments[0])]

    @property
    def closed(self) -> bool:
        """Never: the stepper lives as long as this process."""
        return False

    def close(self) -> None:
        """Nothing to stop: the stepper lives in this process."""


class StepperGroup:
    """One batched env's simulators in the steppers: a group id, and the batch's shares.

    Every call to the steppers passes the group id first, then the share's own arguments.

    Args:
        steppers: where the simulators step.
        size: the batch's number of simulators.
    """

    def __init__(self, steppers: Steppers, size: int) -> None:
        self.steppers = steppers
        self.id = next(_GROUP_IDS)
        self.shares = shares(size, steppers.count)
        """The batch's contiguous shares, one per stepper used."""

    def call(self, method: str, arguments: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Call ``method`` of the steppers, the i-th share's with ``arguments[i]``."""
        return self.steppers.call(method, [(self.id, *args) for args in arguments])

    def each(self, method: str) -> list[Any]:
        """Call ``method`` (no argument but the group id) of every share's stepper."""
        return self.call(method, [() for _ in self.shares])


class SimulatorWorkers:
    """``workers`` processes, each holding the stepper ``build()`` returns there.

    Args:
        build: a picklable factory of the stepper (called once in each worker).
        workers: how many processes. They start from a fork server, which keeps them free of
            the parent's torch threads and state (as ``vector_strategy: async`` does).
    """

    def __init__(self, build: Callable[[], Any], workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        start = multiprocessing.get_context("forkserver")
        self._connections: list[Connection] = []
        self._processes: list[BaseProcess] = []
        for index in range(workers):
            parent_end, child_end = start.Pipe()
            process = start.Process(
                target=_serve,
                args=(child_end, build),
                name=f"metods-simulators-{index}",
                daemon=True,
            )
            process.start()
            child_end.close()
            self._connections.append(parent_end)
            self._processes.append(process)
        self._finalizer = weakref.finalize(self, _shut_down, self._connections, self._processes)

    @property
    def count(self) -> int:
        """How many worker processes (shares)."""
        return len(self._processes)

    def call(self, method: str, arguments: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Call ``method`` of the steppers of the first ``len(arguments)`` workers, the i-th
        with ``arguments[i]``, concurrently; return their results in order.

        Raises:
            SimulatorWorkerError: a stepper raised (its traceback is in the message) or a worker
                died; the workers are then shut down.
        """
        if self.closed:
            raise SimulatorWorkerError("the simulator workers were closed")
        if len(arguments) > self.count:
            raise ValueError(f"{len(arguments)} shares for {self.count} workers")
        used = self._connections[: len(arguments)]
        try:
            for connection, args in zip(used, arguments, strict=True):
                connection.send((method, args))
            replies = [connection.recv() for connection in used]
        except (EOFError, OSError) as error:
            codes = [process.exitcode for process in self._processes]
            self.close()
            raise SimulatorWorkerError(
                f"a simulator worker process died during {method!r} (exit codes {codes}): "
                f"{error!r}; rerun with task.workers=0 to step the simulators in this process "
                "and see the error there"
            ) from None
        results = []
        for index, (status, value) in enumerate(replies):
            if status == "error":
                self.close()
                raise SimulatorWorkerError(
                    f"simulator worker {index} failed in {method!r}:\n{value}"
                )
            results.append(value)
        return results

    @property
    def closed(self) -> bool:
        """Whether the workers were stopped (``close``, or after a failure)."""
        return not self._finalizer.alive

    def close(self) -> None:
        """Stop the workers (their simulators are closed with them)."""
        self._finalizer()


def _serve(connection: Connection, build: Callable[[], Any]) -> None:
    """A worker's loop: build the stepper, then answer ``(method, args)`` requests until
    ``None`` or the parent's end closes. Replies are ``("ok", result)`` or
    ``("error", traceback)``."""
    stepper, failure = None, ""
    try:
        stepper = build()
    except Exception:  # reported at the first call, with the worker's traceback
        failure = traceback.format_exc()
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            break
        if request is None:
            break
        method, args = request
        if stepper is None:
            connection.send(("error", f"building the stepper failed:\n{failure}"))
            continue
        try:
            connection.send(("ok", getattr(stepper, method)(*args)))
        except Exception:
            connection.send(("error", traceback.format_exc()))
    close = getattr(stepper, "close", None)
    if close is not None:
        close()
    connection.close()


def _shut_down(connections: list[Connection], processes: list[BaseProcess]) -> None:
    for connection in connections:
        try:
            connection.send(None)
        except (OSError, ValueError):
            pass
    for process in processes:
        process.join(_JOIN_SECONDS)
        if process.is_alive():
            process.terminate()
            process.join(_JOIN_SECONDS)
    for connection in connections:
        connection.close()
