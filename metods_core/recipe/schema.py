"""The recipe's typed sections, the component specs, and the errors a recipe can raise."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, InstanceOf, create_model, field_validator

from metods_core.agent import AgentConfig
from metods_core.errors import MetodsError
from metods_core.interfaces.config import ComponentConfig
from metods_core.training_log import TEST_PREFIX, TRAIN_PREFIX, VALIDATION_PREFIX

COMPONENTS: tuple[str, ...] = ("task", "plasticity", "readout", "meta_optimizer")
"""The recipe sections that name a plugin."""

_SECTION = ConfigDict(
    extra="forbid", use_attribute_docstrings=True, frozen=True, allow_inf_nan=False
)

MAX_BATCH = 1_000_000
"""Upper bound of the task-batch sizes: far beyond any machine, but catches a typo early."""
MAX_STEPS = 1_000_000_000
"""Upper bound of step counts and intervals."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe."""

    path: str
    """Dotted path of the offending key (``plasticity.recursion_steps``), or "" for the file."""
    message: str
    """What is wrong: the bad value, what was expected, and a hint when there is one."""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class RecipeError(MetodsError):
    """A recipe could not be loaded or validated; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[Problem], source: str | Path | None = None) -> None:
        self.problems = list(problems)
        self.source = str(source) if source is not None else None
        super().__init__(self.report())

    def report(self) -> str:
        """Return every problem, one per line, under a header naming the recipe."""
        count = len(self.problems)
        where = f"recipe {self.source}" if self.source else "the recipe"
        lines = [f"{where} has {count} problem{'s' if count != 1 else ''}:"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


class DataConfig(BaseModel):
    """How tasks are fed to the outer loop."""

    model_config = _SECTION
    batch_tasks: int = Field(default=64, gt=0, le=MAX_BATCH)
    """Tasks per outer step, per device."""


class TrainerConfig(BaseModel):
    """Lightning Trainer settings and the run's compute budget."""

    model_config = _SECTION
    max_steps: int = Field(default=3000, gt=0, le=MAX_STEPS)
    """Outer (meta-)optimisation steps."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu, cuda, mps..."""
    devices: int | str | list[int] = 1
    """Devices per node: a count, "auto", or a list of device indices."""
    num_nodes: int = Field(default=1, gt=0)
    """Machines taking part in the run."""
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, ddp_spawn..."""
    precision: str = "32-true"
    """Lightning precision: 32-true, 16-mixed, bf16-mixed, 64-true..."""
    log_every_n_steps: int = Field(default=10, gt=0, le=MAX_STEPS)
    """Log metrics every this many outer steps."""
    checkpoint_every_n_steps: int = Field(default=100, gt=0, le=MAX_STEPS)
    """Save a resumable checkpoint every this many outer steps."""
    num_threads: int | None = Field(default=None, gt=0)
    """Torch threads per process; None: torch's default, or the cores split evenly over the
    processes of a multi-device run on this node."""
    compile: bool = False
    """torch.compile the agent's whole step (encoder, rule, read-out): faster runs, slower start."""
    compile_span: int = Field(default=1, ge=1, le=64)
    """With ``compile``: steps of a replay (PPO's ratio; backprop through time) traced into one
    compiled call. Where the batch is small a replay is bound by its calls, not by its work,
    and fewer calls make it cheaper; the graph is unrolled in time, so the first compile takes
    several times longer (at most 64 steps, beyond which compiling costs minutes). Ignored
    without ``compile``. docs/results.md measures it on cheetah_dir."""
    compile_cpp_wrapper: bool = True
    """With ``compile``: call the compiled kernels from inductor's C++ wrapper instead of its
    Python one (``torch.compile(options={"cpp_wrapper": True})``). The same kernels and the same
    numbers, less time per call; at the small batches of meta-RL an agent's step is bound by
    its calls (docs/results.md, "Throughput: the kernels called from C++"). False: the Python
    wrapper, for a platform where the C++ one fails to build. Ignored without ``compile``."""
    keep_best: bool = False
    """Also keep the best checkpoint beside the last: the one at the end of the window of
    ``best_window`` outer steps whose mean ``best_metric`` was the highest so far (evaluate it
    with ``metods evaluate RUN --checkpoint best``). The best score survives a resume."""
    best_window: int = Field(default=100, gt=0, le=MAX_STEPS)
    """Outer steps per window over which ``keep_best`` averages ``best_metric`` (a smoothed
    score, not one noisy step)."""
    best_metric: str | None = None
    """The metric ``keep_best`` maximises: a training metric, as logged under ``train/`` but
    named without the prefix (``episode_reward``, ``success``), or a metric of the periodic
    meta-test of a validation split, with its prefix (``validation/success``: needs
    ``evaluation.validation_every_n_steps`` or ``every_n_steps`` and a task with a validation
    split, such as Meta-World's ``validation_tasks``; each validation meta-test is compared,
    ``best_window`` aside). None:
    the task's main metric, the one ``metods evaluate`` ranks by (the return; success on
    Meta-World). Never a ``test/`` metric: choosing a checkpoint by its held-out score would
    leak the test set into the result."""

    @field_validator("best_metric")
    @classmethod
    def _training_or_validation_metric_name(cls, name: str | None) -> str | None:
        if name is None:
            return name
        if name.startswith(VALIDATION_PREFIX) and name != VALIDATION_PREFIX:
            return name
        prefixes = (TRAIN_PREFIX, TEST_PREFIX, VALIDATION_PREFIX)
        if name == "" or f"{name.partition('/')[0]}/" in prefixes:
            raise ValueError(
                "not a training or validation metric's name: give a training metric without "
                "the 'train/' prefix (episode_reward, success), or a validation metric with "
                "its prefix (validation/success); held-out 'test/' metrics cannot choose the "
                "best checkpoint"
            )
        return name

    lr_schedule: Literal["constant", "linear"] = "constant"
    """The meta-optimizer's learning rate over the budget: constant, or linear from the recipe's
    rate at outer step 0 to ``final_lr_fraction`` of it at ``max_steps`` (every parameter group
    alike, so the rule's per-group scales hold). Logged as ``train/lr``."""
    final_lr_fraction: float = Field(default=0.1, gt=0, le=1)
    """With ``lr_schedule: linear``, the fraction of the recipe's rate reached at ``max_steps``."""


class WandbConfig(BaseModel):
    """Weights & Biases logging."""

    model_config = _SECTION
    mode: Literal["offline", "online", "disabled"] = "offline"
    """offline (no account or network needed; `wandb sync` later), online, or disabled."""
    project: str = "metods"
    """W&B project name."""
    entity: str | None = None
    """W&B team or user; None uses the account's default."""
    group: str | None = None
    """Groups runs in the W&B interface (an ablation, a sweep)."""
    tags: list[str] = Field(default_factory=list)
    """Free-form labels of the run."""


class LoggerConfig(BaseModel):
    """Where metrics go."""

    model_config = _SECTION
    wandb: WandbConfig = Field(default_factory=lambda: WandbConfig())
    """Weights & Biases settings."""
    csv: bool = True
    """Also write metrics.csv in the run directory."""


class EvaluationConfig(BaseModel):
    """Meta-testing on held-out tasks."""

    model_config = _SECTION
    episodes: int = Field(default=1000, gt=0, le=MAX_STEPS)
    """Held-out lifetimes (one task each) to evaluate."""
    batch_tasks: int = Field(default=250, gt=0, le=MAX_BATCH)
    """Lifetimes run in parallel."""
    greedy: bool = False
    """Act with the most likely action instead of sampling."""
    every_n_steps: int | None = Field(default=None, gt=0, le=MAX_STEPS)
    """During training, meta-test the held-out tasks every this many outer steps and log the
    means as ``test/<metric>`` beside the ``train/`` metrics (the test curve); None: only
    ``metods evaluate`` after training. May change on resume."""
    periodic_episodes: int | None = Field(default=None, gt=0, le=MAX_STEPS)
    """Held-out lifetimes of each periodic meta-test (``every_n_steps``); None: ``episodes``.
    Fewer keep it cheap: each costs ``periodic_episodes / batch_tasks`` lifetimes' time."""
    validation_episodes: int | None = Field(default=None, gt=0, le=MAX_STEPS)
    """Lifetimes of each periodic meta-test of the validation split, for a task that has one
    (logged as ``validation/<metric>``); None: ``periodic_episodes``."""
    validation_every_n_steps: int | None = Field(default=None, gt=0, le=MAX_STEPS)
    """Meta-test the validation split every this many outer steps, for a task that has one;
    None: at ``every_n_steps`` (neither set: never). A checkpoint chosen by
    ``trainer.best_metric: validation/...`` is one of these steps, so a finer grid than the
    test curve's costs only the (smaller) validation meta-tests."""


@dataclasses.dataclass(frozen=True)
class ComponentSpec:
    """A component chosen by a recipe: its name, its class and its validated parameters."""

    name: str
    """The name the recipe used (an entry-point name or ``module:Class``)."""
    cls: type
    """The plugin class."""
    config: ComponentConfig
    """The validated ``cls.Config``."""


class Recipe(BaseModel):
    """A whole experiment: components, their parameters, and how to train and evaluate."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        frozen=True,
        arbitrary_types_allowed=True,
        allow_inf_nan=False,
    )
    seed: int = 0
    """Seed of every random stream of the run."""
    name: str | None = None
    """Run name; None derives one from the recipe file and the time."""
    task: InstanceOf[ComponentSpec]
    """Task sampler (entry-point group metods.tasks)."""
    agent: AgentConfig = Field(default_factory=lambda: AgentConfig.model_validate({}))
    """Shape of the agent around its plasticity rule."""
    plasticity: InstanceOf[ComponentSpec]
    """Plasticity rule (entry-point group metods.plasticity)."""
    readout: InstanceOf[ComponentSpec]
    """Read-out (entry-point group metods.readout)."""
    meta_optimizer: InstanceOf[ComponentSpec]
    """Outer-loop algorithm (entry-point group metods.meta_optimizers)."""
    data: DataConfig = Field(default_factory=lambda: DataConfig())
    """How tasks are fed to the outer loop."""
    trainer: TrainerConfig = Field(default_factory=lambda: TrainerConfig())
    """Lightning Trainer settings."""
    logger: LoggerConfig = Field(default_factory=lambda: LoggerConfig())
    """Where metrics go."""
    evaluation: EvaluationConfig = Field(default_factory=lambda: EvaluationConfig())
    """Meta-testing on held-out tasks."""
    source: str | None = None
    """The recipe file this was loaded from."""


# Phase 1 validates every field of Recipe except the components, which are checked by hand.
_RecipeFields = create_model(  # type: ignore[call-overload]  # pydantic's overloads miss this form
    "_RecipeFields",
    __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
    **{
        name: (field.annotation, field)
        for name, field in Recipe.model_fields.items()
        if name not in COMPONENTS
    },
)
