"""The four extension points of metods, one small abstract class each."""

from metods_core.interfaces.config import ComponentConfig
from metods_core.interfaces.meta_optimizer import MetaOptimizer, OuterBatch, ReduceOp
from metods_core.interfaces.plasticity import PlasticityRule, State
from metods_core.interfaces.readout import Readout
from metods_core.interfaces.state import map_state, where_state
from metods_core.interfaces.tasks import BatchedEnv, Split, TaskBatch, TaskSampler

__all__ = [
    "BatchedEnv",
    "ComponentConfig",
    "MetaOptimizer",
    "OuterBatch",
    "PlasticityRule",
    "Readout",
    "ReduceOp",
    "Split",
    "State",
    "TaskBatch",
    "TaskSampler",
    "map_state",
    "where_state",
]
