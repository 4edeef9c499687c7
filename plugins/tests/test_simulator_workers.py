"""Worker processes that step shares of a batch (``task.workers``): the split, the calls in
order, and a stepper's failure or a worker's death reported with what to do."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from metods_plugins.tasks.simulator_workers import (
    InProcessSteppers,
    SimulatorWorkerError,
    SimulatorWorkers,
    shares,
)


class CountingStepper:
    """A stepper that answers with its process id, and fails when asked to."""

    def __init__(self) -> None:
        self.calls = 0

    def double(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        self.calls += 1
        return 2 * values, os.getpid()

    def fail(self) -> None:
        raise ValueError("the simulator refused")

    def calls_so_far(self) -> int:
        return self.calls


def broken_stepper() -> CountingStepper:
    raise ImportError("no simulator here")


def test_shares_split_the_batch_into_contiguous_near_equal_parts() -> None:
    """The first shares take the remainder; no share is empty, so a batch smaller than the
    workers uses only as many workers as it has simulators."""
    assert shares(16, 2) == [slice(0, 8), slice(8, 16)]
    assert shares(10, 3) == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert shares(2, 4) == [slice(0, 1), slice(1, 2)]
    assert shares(5, 1) == [slice(0, 5)]
    with pytest.raises(ValueError, match="at least 1"):
        shares(4, 0)


def test_workers_answer_each_share_in_order_from_their_own_processes() -> None:
    """Each share's arguments reach its own worker (another process than this one, one per
    worker), results come back in the shares' order, and a worker keeps its stepper's state
    between calls; fewer argument tuples than workers call only the first workers."""
    workers = SimulatorWorkers(CountingStepper, 2)
    try:
        results = workers.call("double", [(np.arange(3),), (np.arange(3, 5),)])
        np.testing.assert_array_equal(results[0][0], [0, 2, 4])
        np.testing.assert_array_equal(results[1][0], [6, 8])
        pids = {pid for _, pid in results}
        assert len(pids) == 2 and os.getpid() not in pids
        workers.call("double", [(np.zeros(1),)])
        assert workers.call("calls_so_far", [(), ()]) == [2, 1]
    finally:
        workers.close()
    with pytest.raises(SimulatorWorkerError, match="closed"):
        workers.call("calls_so_far", [()])


def test_a_stepper_error_names_the_worker_and_carries_its_traceback() -> None:
    workers = SimulatorWorkers(CountingStepper, 2)
    with pytest.raises(SimulatorWorkerError, match=r"worker 0 failed in 'fail'(.|\n)*refused"):
        workers.call("fail", [(), ()])


def test_a_stepper_that_cannot_be_built_is_reported_at_the_first_call() -> None:
    workers = SimulatorWorkers(broken_stepper, 1)
    with pytest.raises(SimulatorWorkerError, match=r"building the stepper failed(.|\n)*no simul"):
        workers.call("double", [(np.zeros(1),)])


def test_a_dead_worker_is_reported_with_the_in_process_fallback() -> None:
    """A worker killed from outside: the next call says so and how to see the error in this
    process (``task.workers=0``), instead of hanging."""
    workers = SimulatorWorkers(CountingStepper, 2)
    try:
        pid = workers.call("double", [(np.zeros(1),)])[0][1]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(SimulatorWorkerError, match=r"died(.|\n)*task.workers=0"):
            workers.call("double", [(np.zeros(1),), (np.zeros(1),)])
    finally:
        workers.close()


def test_in_process_steppers_are_one_share() -> None:
    steppers = InProcessSteppers(CountingStepper())
    assert steppers.count == 1
    [(doubled, pid)] = steppers.call("double", [(np.ones(2),)])
    np.testing.assert_array_equal(doubled, [2, 2])
    assert pid == os.getpid()
    with pytest.raises(ValueError, match="one share"):
        steppers.call("double", [(np.ones(1),), (np.ones(1),)])
