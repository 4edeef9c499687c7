"""Conformance suites that every plugin, ours or a third party's, can run.

One suite per extension point, in the spirit of Hydra's ``LauncherTestSuite`` and Gymnasium's
``check_env``. A suite is a dict of small named checks (``PLASTICITY_CHECKS``...), each a
function of the plugin's class (a read-out's also takes an action space) and optional config
overrides that raises ``AssertionError`` with a clear message; ``check_*`` runs a whole suite
and reports every failure at once. In a plugin's own tests::

    import pytest
    from metods_core.testing import PLASTICITY_CHECKS

    @pytest.mark.parametrize("check", PLASTICITY_CHECKS.values(), ids=PLASTICITY_CHECKS.keys())
    def test_conformance(check):
        check(MyRule, hidden=8)

The fakes (``FakeRule``, ``FakeReadout``, ``FakeTasks``, ``FakeMetaOptimizer``) are minimal
components for tests of the core that must not depend on any plugin.
"""

from metods_core.testing.fakes import (
    FakeMetaOptimizer,
    FakeReadout,
    FakeRule,
    FakeTasks,
    create_tiny_agent,
)
from metods_core.testing.meta_optimizer import (
    META_OPTIMIZER_CHECKS,
    SLOW_META_OPTIMIZER_CHECKS,
    check_meta_optimizer,
)
from metods_core.testing.plasticity import PLASTICITY_CHECKS, check_plasticity_rule
from metods_core.testing.readout import ACTION_SPACES, READOUT_CHECKS, check_readout
from metods_core.testing.tasks import TASK_CHECKS, check_task_sampler
from metods_core.testing.torch_calls import CountTorchCalls

__all__ = [
    "CountTorchCalls",
    "ACTION_SPACES",
    "META_OPTIMIZER_CHECKS",
    "PLASTICITY_CHECKS",
    "READOUT_CHECKS",
    "SLOW_META_OPTIMIZER_CHECKS",
    "TASK_CHECKS",
    "FakeMetaOptimizer",
    "FakeReadout",
    "FakeRule",
    "FakeTasks",
    "check_meta_optimizer",
    "check_plasticity_rule",
    "check_readout",
    "check_task_sampler",
    "create_tiny_agent",
]
