"""Opt-in fast path: `GroupedStepsClassifier` takes `steps_per_call` batches per Lightning step.

The same network, loss, metrics and Adam steps as `MNISTClassifier`, one optimizer step per batch, so
the weights are the same for the same batches. What it saves: Lightning's per-step machinery (the
loop's hooks, callbacks, progress bar, closure) runs once per `steps_per_call` batches instead of once
per batch. It uses only public API: `training_step(self, dataloader_iter)` pulls the batches itself and
optimizes manually (`self.optimizers()`, `manual_backward`, `optimizer.step()`), so `global_step` still
counts optimizer steps. The data module is untouched; its batch hooks are applied here, since with
`dataloader_iter` Lightning hands over the batches as the DataLoader yields them.

Select it with `python -m mnist_dense fit --config configs/grouped.yaml`. Trainer flags that act per
Lightning step cannot be honoured and are refused with a message: gradient_clip_val and
accumulate_grad_batches (Lightning's own check for manual optimization), val_check_interval other
than 1.0 and check_val_every_n_epoch null (validation inside an epoch), more than one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from jsonargparse.typing import PositiveFloat, PositiveInt
from torch import Tensor

from mnist_dense.constants import TUTORIAL_HIDDEN, TUTORIAL_LR
from mnist_dense.module import Batch, MNISTClassifier

DEFAULT_STEPS_PER_CALL = 16


class GroupedStepsClassifier(MNISTClassifier):
    """`MNISTClassifier` that runs `steps_per_call` optimizer steps, one per batch, in each `training_step`.

    Args:
        hidden: As in `MNISTClassifier`.
        lr: As in `MNISTClassifier`.
        lr_schedule: As in `MNISTClassifier`; "onecycle" is stepped after every optimizer step.
        steps_per_call: Batches (each its own optimizer step) that one `training_step` pulls and trains on.
    """

    def __init__(
        self,
        hidden: PositiveInt = TUTORIAL_HIDDEN,
        lr: PositiveFloat = TUTORIAL_LR,
        lr_schedule: Literal["constant", "onecycle"] = "constant",
        steps_per_call: PositiveInt = DEFAULT_STEPS_PER_CALL,
    ) -> None:
        super().__init__(hidden=hidden, lr=lr, lr_schedule=lr_schedule)
        if not isinstance(steps_per_call, int) or isinstance(steps_per_call, bool) or steps_per_call < 1:
            raise ValueError(f"GroupedStepsClassifier(steps_per_call={steps_per_call!r}): give a whole number >= 1.")
        self.steps_per_call = steps_per_call
        self.automatic_optimization = False

    def on_fit_start(self) -> None:
        trainer = self.trainer
        refusals = {
            "val_check_interval": (
                trainer.val_check_interval != 1.0,
                f"--trainer.val_check_interval {trainer.val_check_interval} asks for validation inside an epoch,"
                " at a count of batches",
            ),
            "check_val_every_n_epoch": (
                trainer.check_val_every_n_epoch is None,
                "--trainer.check_val_every_n_epoch null asks for validation at a count of batches across epochs",
            ),
            "devices": (
                trainer.world_size > 1,
                f"this run has {trainer.world_size} processes (--trainer.devices / --trainer.num_nodes); the grouped"
                " steps are checked on one process only",
            ),
        }
        for flag, (refused, why) in refusals.items():
            if refused:
                raise ValueError(
                    f"GroupedStepsClassifier cannot honour {flag}: {why}, but Lightning counts one step per"
                    f" {self.steps_per_call} batches here, so it would act at the wrong batches. Drop the flag, or"
                    " train with the default module (leave out `--config configs/grouped.yaml`), which honours it."
                )
        super().on_fit_start()

    def _prepare(self, batch: Any) -> Batch:
        """What Lightning does to each batch before `training_step`: precision, then the batch hooks, public ones."""
        trainer = self.trainer
        hooks = trainer.datamodule if trainer.datamodule is not None else self
        batch = trainer.precision_plugin.convert_input(batch)
        batch = hooks.on_before_batch_transfer(batch, 0)
        batch = self.transfer_batch_to_device(batch, self.device, 0)
        return hooks.on_after_batch_transfer(batch, 0)

    def training_step(self, dataloader_iter: Iterator) -> Tensor | None:
        trainer = self.trainer
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        loss = None
        for _ in range(self.steps_per_call):
            if 0 <= trainer.max_steps <= trainer.global_step:
                break
            try:
                batch, _, _ = next(dataloader_iter)
            except StopIteration:
                break
            loss = self.shared_step(self._prepare(batch), "train")
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        return None if loss is None else loss.detach()

    def on_train_epoch_end(self) -> None:
        # With `dataloader_iter` Lightning asks every training-time `self.log` for a batch_size; a metric object
        # keeps its own counts and ignores it.
        self.log("train_loss", self.train_loss, batch_size=1)
        self.log("train_acc", self.train_acc, batch_size=1)
