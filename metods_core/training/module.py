"""The LightningModule that hands each outer step to the recipe's meta-optimizer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from metods_core.components import create_agent, create_meta_optimizer, create_task_sampler
from metods_core.errors import MetodsError
from metods_core.interfaces import OuterStep, TaskBatch
from metods_core.training.seeding import derive_seed

if TYPE_CHECKING:
    from metods_core.recipe import Recipe


class NonFiniteError(MetodsError):
    """The loss or the meta-parameters stopped being finite numbers."""


class MetaLearningModule(L.LightningModule):
    """Holds the agent; manual optimization, each step delegated to the meta-optimizer."""

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.recipe = recipe
        self.sampler = create_task_sampler(recipe)
        self.agent = create_agent(recipe, self.sampler)
        self.meta_optimizer = create_meta_optimizer(recipe)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Return the meta-optimizer's optimizer over the agent's meta-parameters."""
        return self.meta_optimizer.configure_optimizer(self.agent)

    def training_step(self, tasks: TaskBatch, batch_idx: int) -> None:
        """Run one outer step on ``tasks`` and log its metrics."""
        env = self.sampler.make_env(tasks)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(self.recipe.seed, "actions", tasks.seed))
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)
        step = OuterStep(
            optimizer=optimizer,  # type: ignore[arg-type]  # LightningOptimizer wraps one
            backward=self.manual_backward,
            generator=generator,
        )
        metrics = self.meta_optimizer.training_step(self.agent, env, step)
        loss = metrics.get("loss")
        # One host sync per outer step (never per environment step) to stop a diverged run early.
        if loss is not None and not bool(torch.isfinite(loss)):
            raise NonFiniteError(
                f"the loss became {loss.item()} at step {self.global_step}: meta-training "
                "diverged. "
                "The last checkpoint in the run directory is intact; resume from it with a lower "
                "meta_optimizer.lr or a smaller meta_optimizer.max_grad_norm."
            )
        self.log_dict(
            {f"train/{name}": value for name, value in metrics.items()},
            batch_size=tasks.size,
            sync_dist=False,
        )
        reward = metrics.get("episode_reward")
        if reward is not None:
            self.log("reward", reward, prog_bar=True, logger=False, batch_size=tasks.size)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to write a checkpoint whose meta-parameters are not finite."""
        for name, parameter in self.agent.named_parameters():
            if not torch.isfinite(parameter).all():
                raise NonFiniteError(
                    f"meta-parameter agent.{name} holds non-finite values at step "
                    f"{self.global_step}; the earlier checkpoints are kept. Lower the learning "
                    "rate."
                )
