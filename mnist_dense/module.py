"""The LightningModule: cross-entropy on logits, Adam, accuracy counted as Keras counts it.

Training uses manual optimization so that one Lightning step can run several optimizer steps
(the data module hands over a list of batches). At batch 32 the Trainer's own per-step work costs
more than the arithmetic; grouping batches divides that cost without changing what is computed:
every batch still gets its own forward, backward and Adam step, in the same order.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from jsonargparse.typing import PositiveFloat, PositiveInt
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_dense.checkpoints import check_state_shapes
from mnist_dense.data import NUM_CLASSES
from mnist_dense.model import DenseNet

Batch = tuple[Tensor, Tensor]
# Hooks that Lightning's backward and optimizer step call; the direct step skips them, so it is used
# only when neither the module nor any callback overrides one of them.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def _accuracy(**kwargs) -> MulticlassAccuracy:
    return MulticlassAccuracy(num_classes=NUM_CLASSES, average="micro", **kwargs)  # Keras' accuracy is micro


def _mean() -> MeanMetric:
    return MeanMetric(nan_strategy="disable")  # no NaN check: it would sync with the GPU every step


class MNISTClassifier(L.LightningModule):
    """Flatten -> Linear(784, hidden) -> ReLU -> Linear(hidden, 10), trained with Adam.

    Args:
        hidden: Units of the hidden layer; 128 as in the tutorial (101,770 parameters).
        lr: Adam's learning rate; 1e-3 is Keras' default. With lr_schedule "onecycle" it is the peak.
        lr_schedule: "constant" as in the tutorial, or "onecycle" (warm up, then anneal, per optimizer step).
        gradient_clip_val: Clip the gradient norm to this value; `--trainer.gradient_clip_val` lands here.
    """

    def __init__(
        self,
        hidden: PositiveInt = 128,
        lr: PositiveFloat = 1e-3,
        lr_schedule: Literal["constant", "onecycle"] = "constant",
        gradient_clip_val: PositiveFloat | None = None,
    ) -> None:
        super().__init__()
        for name, kind, value in (("hidden", PositiveInt, hidden), ("lr", PositiveFloat, lr)):
            try:
                kind(value)
            except (TypeError, ValueError) as err:
                raise ValueError(f"MNISTClassifier({name}={value!r}): {err}") from None
        if lr_schedule not in ("constant", "onecycle"):
            raise ValueError(f"MNISTClassifier(lr_schedule={lr_schedule!r}): use 'constant' or 'onecycle'.")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = DenseNet(hidden)
        self.train_acc, self.val_acc, self.test_acc = _accuracy(validate_args=False), _accuracy(), _accuracy()
        self.train_loss, self.val_loss, self.test_loss = _mean(), _mean(), _mean()
        self._train_metrics_logged = False
        self.direct_step = False  # decided in on_train_start, once the Trainer's setup is known

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        if self.hparams.lr_schedule == "constant":
            return optimizer
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=self._total_optimizer_steps()
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_optimizer_steps(self) -> int:
        """Optimizer steps of the whole fit; a Lightning step may hold several of them."""
        trainer = self.trainer
        lightning_steps = trainer.estimated_stepping_batches  # also makes Lightning load the train loader
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if getattr(sampler, "group", None):
            lightning_steps = sampler.num_batches * max(trainer.max_epochs or 1, 1)
            if trainer.max_steps > 0:
                lightning_steps = min(lightning_steps, trainer.max_steps)
        return max(int(lightning_steps), 1)

    def on_fit_start(self) -> None:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        rank_zero_info(f"{type(self.net).__name__}: {trainable:,} trainable parameters")

    def _max_steps_reached(self) -> bool:
        max_steps = self.trainer.max_steps
        return max_steps >= 0 and self.trainer.global_step >= max_steps

    def _direct_step_allowed(self) -> bool:
        """True when `loss.backward()` + the raw optimizer's `step()` do exactly what Lightning's path does.

        That holds on one device in 32-bit precision, without clipping or a profiler, with no step hook
        overridden and no `backward` of the module's own. Anything else (mixed precision, DDP, clipping)
        takes Lightning's path.
        """
        trainer = self.trainer
        overridden = [
            name
            for name in STEP_HOOKS
            if getattr(type(self), name) is not getattr(L.LightningModule, name)
            or any(getattr(type(cb), name) is not getattr(L.Callback, name) for cb in trainer.callbacks)
        ]
        return (
            type(trainer.strategy) is SingleDeviceStrategy
            and type(trainer.strategy.precision_plugin) is Precision
            and type(trainer.profiler) is PassThroughProfiler
            and type(self).backward is L.LightningModule.backward
            and not self.hparams.gradient_clip_val
            and not overridden
        )

    def on_train_start(self) -> None:
        self.direct_step = self._direct_step_allowed()

    def _direct_step(self, optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
        """Lightning's manual step minus its per-call dispatch: the same counters, the same arithmetic."""
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        progress.increment_ready()
        optimizer.step()
        progress.increment_completed()

    def training_step(self, batch: Batch | list[Batch], batch_idx: int) -> None:
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        batches = [batch] if isinstance(batch[0], Tensor) else batch
        clip_norm = self.hparams.gradient_clip_val
        direct = self.direct_step
        logits_seen, targets_seen, losses, sizes = [], [], [], []
        for images, targets in batches:
            if self._max_steps_reached():
                break
            logits = self.net(images)
            loss = F.cross_entropy(logits, targets)
            if direct:
                self._direct_step(optimizer.optimizer, loss)
            else:
                optimizer.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                if clip_norm:
                    self.clip_gradients(optimizer, gradient_clip_val=clip_norm, gradient_clip_algorithm="norm")
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            logits_seen.append(logits.detach())
            targets_seen.append(targets)
            losses.append(loss.detach())
            sizes.append(len(targets))
        if not losses:
            return
        self.train_acc.update(torch.cat(logits_seen), torch.cat(targets_seen))
        self.train_loss.update(torch.stack(losses).float(), torch.tensor(sizes, device=self.device, dtype=torch.float))
        if not self._train_metrics_logged:
            # Logged once an epoch: Lightning keeps the metric objects and computes them over every update
            # at the epoch's end, and each `self.log` call costs about a millisecond, more than a step.
            self.log("train_loss", self.train_loss, on_step=False, on_epoch=True)
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
            self._train_metrics_logged = True

    def on_train_epoch_start(self) -> None:
        self._train_metrics_logged = False

    def _evaluate(self, batch: Batch, stage: str) -> None:
        images, targets = batch
        logits = self.net(images)
        loss_metric, acc_metric = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_acc")
        loss_metric.update(F.cross_entropy(logits, targets), len(targets))
        acc_metric.update(logits, targets)
        self.log(f"{stage}_loss", loss_metric, on_step=False, on_epoch=True)
        self.log(f"{stage}_acc", acc_metric, on_step=False, on_epoch=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Weights of another hidden size: a message naming both sizes, not load_state_dict's shape error."""
        check_state_shapes(self._trainer.ckpt_path if self._trainer else None, checkpoint["state_dict"], self)

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """Class probabilities (the tutorial's softmax), the predicted digit, and the label if known."""
        images, targets = batch
        probabilities = self.net(images).softmax(dim=1)
        return {"probabilities": probabilities, "predicted": probabilities.argmax(dim=1), "target": targets}
