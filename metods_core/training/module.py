"""The LightningModule that hands each outer step to the recipe's meta-optimizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from metods_core.components import create_agent, create_meta_optimizer, create_task_sampler
from metods_core.errors import MetodsError
from metods_core.interfaces import OuterBatch, ReduceOp, TaskBatch
from metods_core.training.checkpoints import OUTER_STEP_KEY, checkpoint_outer_step
from metods_core.training.lr_schedule import apply_learning_rates, learning_rate_factor
from metods_core.training.regroup import regroup_optimizer_state
from metods_core.training.seeding import derive_seed
from metods_core.training_log import TRAIN_PREFIX

if TYPE_CHECKING:
    from metods_core.recipe import Recipe


class NonFiniteError(MetodsError):
    """The loss, the gradients, the action logits or the meta-parameters stopped being finite."""


_ADVICE = (
    "meta-training diverged. The checkpoints already written are finite and kept; resume "
    "from the last one with a lower meta_optimizer.lr or a smaller meta_optimizer.max_grad_norm "
    "(metods train --resume {run_dir} meta_optimizer.lr=...)."
)


def _invalid_distribution(error: ValueError) -> bool:
    """Whether ``error`` is torch.distributions refusing non-finite parameters (NaN logits)."""
    return "found invalid values" in str(error) or "to satisfy the constraint" in str(error)


def _check_gradients(optimizer: torch.optim.Optimizer, where: Callable[[], str]) -> None:
    """Refuse an optimizer step on non-finite gradients (one host sync per optimizer step)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
    finite = [torch.isfinite(g).all() for g in grads if g is not None]
    if finite and not bool(torch.stack(finite).all()):
        raise NonFiniteError(f"the gradients became non-finite at {where()}")


class MetaLearningModule(L.LightningModule):
    """Holds the agent; manual optimization, each step delegated to the meta-optimizer.

    The run's clock is ``outer_step``, the number of outer steps taken, counted here and saved
    in every checkpoint: the task stream, the checkpoint cadence, ``trainer.max_steps`` and
    the progress bar follow it, however many optimizer steps the meta-optimizer takes inside
    one outer step (Lightning's ``global_step`` counts those).
    """

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.recipe = recipe
        self.sampler = create_task_sampler(recipe)
        self.agent = create_agent(recipe, self.sampler)
        self.meta_optimizer = create_meta_optimizer(recipe)
        self.outer_step = 0
        self._base_rates: list[float] = []  # each parameter group's recipe rate

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Return the meta-optimizer's optimizer over the agent's meta-parameters.

        Each of its steps first checks the gradients are finite, so non-finite values never
        reach the meta-parameters.
        """
        optimizer = self.meta_optimizer.configure_optimizer(self.agent)
        self._base_rates = [float(group["lr"]) for group in optimizer.param_groups]
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: _check_gradients(opt, self._at))
        return optimizer

    def _at(self) -> str:
        """Where training stands, and the advice, for a non-finite error message."""
        run_dir = self.trainer.default_root_dir if self._trainer is not None else "RUN_DIR"
        return f"outer step {self.outer_step}: {_ADVICE.format(run_dir=run_dir)}"

    def _all_reduce(self, tensor: torch.Tensor, op: ReduceOp = "mean") -> torch.Tensor:
        """Reduce ``tensor`` over every process (a copy; the identity on one process)."""
        return self.trainer.strategy.reduce(tensor.clone(), reduce_op=op)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        """Stop before an outer step beyond ``trainer.max_steps`` (-1 ends the epoch)."""
        if self.outer_step >= self.recipe.trainer.max_steps:
            self.trainer.should_stop = True
            return -1
        return None

    def training_step(self, tasks: TaskBatch, batch_idx: int) -> None:
        """Run one outer step on ``tasks`` and log its metrics."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(self.recipe.seed, "actions", tasks.seed))
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)
        factor = learning_rate_factor(self.recipe.trainer, self.outer_step)
        apply_learning_rates(optimizer.optimizer, self._base_rates, factor)
        batch = OuterBatch(
            tasks=tasks,
            build_env=self.sampler.make_env,
            optimizer=optimizer,  # type: ignore[arg-type]  # LightningOptimizer wraps one
            backward=self.manual_backward,
            generator=generator,
            step=self.outer_step,
            all_reduce=self._all_reduce,
            rank=self.global_rank,
            world_size=self.trainer.world_size,
        )
        try:
            metrics = self.meta_optimizer.training_step(self.agent, batch)
        except ValueError as error:
            if not _invalid_distribution(error):
                raise
            raise NonFiniteError(
                f"the action distribution's parameters (logits) became non-finite at {self._at()}"
            ) from None
        finally:
            batch.close()
        loss = metrics.get("loss")
        # One host sync per outer step (never per environment step) to stop a diverged run early.
        if loss is not None and not bool(torch.isfinite(loss)):
            raise NonFiniteError(f"the loss became {loss.item()} at {self._at()}")
        metrics.update(self.agent.rule_diagnostics())
        metrics["lr"] = torch.tensor(self._base_rates[0] * factor, device=self.device)  # group 0
        self.outer_step += 1
        self.log_dict(
            {f"{TRAIN_PREFIX}{name}": value for name, value in metrics.items()},
            batch_size=tasks.size,
            sync_dist=False,
        )
        reward = metrics.get("episode_reward")
        if reward is not None:
            self.log("reward", reward, prog_bar=True, logger=False, batch_size=tasks.size)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """End training once ``trainer.max_steps`` outer steps are done."""
        if self.outer_step >= self.recipe.trainer.max_steps:
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the outer-step count; refuse to save non-finite meta-parameters."""
        for name, parameter in self.agent.named_parameters():
            if not torch.isfinite(parameter).all():
                raise NonFiniteError(
                    f"meta-parameter agent.{name} holds non-finite values at step "
                    f"{self.outer_step}; the earlier checkpoints are kept. Lower the learning "
                    "rate."
                )
        checkpoint[OUTER_STEP_KEY] = self.outer_step

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the outer-step count (checkpoints older than it counted optimizer steps),
        and fit the saved optimizer state to the recipe's parameter groups (a resume may change
        a rule's learning-rate multipliers: ``regroup_optimizer_state``)."""
        self.outer_step = checkpoint_outer_step(checkpoint)
        states = checkpoint.get("optimizer_states")
        if states:
            fresh = self.meta_optimizer.configure_optimizer(self.agent)
            states[0] = regroup_optimizer_state(states[0], fresh)
