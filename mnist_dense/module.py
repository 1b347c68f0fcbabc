"""The LightningModule: cross-entropy on logits, Adam, and accuracy counted as Keras counts it.

Canonical Lightning: automatic optimization, `training_step` returns the loss, one shared step for
train, validation and test, the optimizer from `configure_optimizers`. Gradient clipping, accumulation,
precision and devices are the Trainer's own flags.

Metrics are updated on the device every step and logged once per epoch (in `on_*_epoch_end`): each
`self.log` call costs about a millisecond on this CPU, more than a training step of this network, and
on a GPU a per-step log would make the host wait for the device.
"""

from __future__ import annotations

from typing import IO, Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import FSDPPrecision, MixedPrecision
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_dense.calibration import energy, temperature_of, threshold_of
from mnist_dense.checkpoints import check_network, peek_checkpoint, saved_network
from mnist_dense.constants import IMAGE_SIZE, KERAS_ADAM_EPS, NOT_A_DIGIT, NUM_CLASSES, TUTORIAL_HIDDEN, TUTORIAL_LR
from mnist_dense.model import DenseNet, build_network, class_path, known_networks, network_class, network_config

Batch = tuple[Tensor, Tensor]
STAGES = ("train", "val", "test")


class MNISTClassifier(L.LightningModule):
    """A network of `mnist_dense.model` (the tutorial's DenseNet by default), trained with Adam as Keras configures it.

    Args:
        net: The network to train: `mnist_dense.model.ClassicConvNet` or `mnist_dense.model.GlobalPoolConvNet`
            (with their own init args), or `mnist_dense.model.DenseNet`; unset, the tutorial's DenseNet of `hidden`
            units. Only this package's networks: a checkpoint names its network, and loading one must never import
            a class from elsewhere.
        hidden: Units of the default DenseNet's hidden layer; 128 as in the tutorial (101,770 parameters).
        lr: Adam's learning rate; 1e-3 is Keras' default. With lr_schedule "onecycle" it is the peak.
        lr_schedule: "constant" as in the tutorial, or "onecycle" (warm up, then anneal, once per optimizer step,
            over `trainer.estimated_stepping_batches`).
        non_digit_weight: With `--data.non_digits`, how much the network is taught to be unsure of non-digits
            (outlier exposure; 0.5 is the usual weight); 0, the tutorial's training, uses the digits alone.
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        hidden: int = TUTORIAL_HIDDEN,
        lr: float = TUTORIAL_LR,
        lr_schedule: Literal["constant", "onecycle"] = "constant",
        non_digit_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.temperature = 1.0  # the softmax as trained; `calibrate` fits another, kept in the checkpoint
        self.not_a_digit_threshold: float | None = None  # set by `calibrate`: a score above it is not a digit
        problem = hyperparameter_problem(net, hidden, lr, lr_schedule, non_digit_weight)
        if problem:
            raise ValueError(f"MNISTClassifier: {problem}")
        if isinstance(net, dict):  # a checkpoint's config, as Lightning rebuilds a model saved without the CLI
            net = build_network(net)
        self.net = net if net is not None else DenseNet(hidden)
        # The network's config in the hyperparameters, not the instance: a weights_only load refuses a pickled module.
        net = network_config(net) if net is not None else None
        self.save_hyperparameters()
        # One metric object per stage. Keras' accuracy is micro (the fraction right); torchmetrics' default is macro.
        # No argument checks or NaN checks in training: each would make a GPU wait every step.
        self.train_acc = MulticlassAccuracy(NUM_CLASSES, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(NUM_CLASSES, average="micro")
        self.test_acc = MulticlassAccuracy(NUM_CLASSES, average="micro")
        self.train_loss, self.val_loss, self.test_loss = (MeanMetric(nan_strategy="disable") for _ in STAGES)
        self.test_images = 0  # how many test images the last test counted (all processes)
        # One input as the data module serves it: Lightning's summary runs it through to get each layer's output shape.
        self.example_input_array = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, eps=KERAS_ADAM_EPS, fused=self.fused_adam())
        if self.hparams.lr_schedule == "constant":
            return optimizer
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.hparams.lr, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def fused_adam(self) -> bool | None:
        """Adam's fused kernel (one kernel for all parameters: 0.2 ms a step less here, README: Speed) where torch has
        one for the parameters' device, else torch's default. Not under mixed precision: Lightning's plugins unscale
        and clip the gradients outside the optimizer's step, and refuse to clip for one that unscales inside it."""
        if any(p.device.type not in ("cpu", "cuda") for p in self.parameters()):
            return None
        try:
            mixed = isinstance(self.trainer.precision_plugin, (MixedPrecision, FSDPPrecision))
        except RuntimeError:  # not attached to a Trainer
            mixed = False
        return None if mixed else True

    def shared_step(self, batch: Batch, stage: str) -> Tensor:
        """Forward, loss, and the stage's metric updates: the same for training, validation and test."""
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        # One value per image rather than `weight=`: torchmetrics drops the weights when nan_strategy="disable".
        getattr(self, f"{stage}_loss").update(loss.detach().expand(len(labels)))
        getattr(self, f"{stage}_acc").update(logits.detach(), labels)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        if self.hparams.get("non_digit_weight"):
            return self.non_digit_step(batch)
        return self.shared_step(batch, "train")

    def non_digit_step(self, batch: Batch) -> Tensor:
        """Outlier exposure (Hendrycks et al., 2019): cross-entropy on the digits, plus `non_digit_weight` times the
        cross-entropy of each non-digit (label 10, `--data.non_digits`) to the uniform distribution over digits."""
        images, labels = batch
        logits = self(images)
        digit = labels != NOT_A_DIGIT
        loss = F.cross_entropy(logits[digit], labels[digit])
        others = logits[~digit]
        if len(others):
            loss = loss + self.hparams.non_digit_weight * -others.log_softmax(dim=1).mean()
        self.train_loss.update(loss.detach().expand(int(digit.sum())))
        self.train_acc.update(logits[digit].detach(), labels[digit])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def log_epoch(self, stage: str) -> None:
        """Log the stage's metric objects once: Lightning computes them over the epoch (all processes), then resets."""
        loss = getattr(self, f"{stage}_loss")
        if stage == "test":
            images = loss.weight.clone()  # the strategy's reduce works in place: on a copy
            self.test_images = int(self.trainer.strategy.reduce(images, reduce_op="sum"))
        self.log(f"{stage}_loss", loss)
        self.log(f"{stage}_acc", getattr(self, f"{stage}_acc"))

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """Class probabilities (the tutorial's softmax, of logits / T once `calibrate` has fitted a temperature T),
        the predicted digit, the label (-1 if unknown), and the "not a digit" score (`calibration.energy`)."""
        images, labels = batch
        logits = self(images)
        probabilities = (logits / self.temperature).softmax(dim=1)
        predicted = probabilities.argmax(dim=1)
        return {"probabilities": probabilities, "predicted": predicted, "target": labels, "score": energy(logits)}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | IO, *args: Any, **kwargs: Any) -> MNISTClassifier:
        """Lightning's, once the checkpoint is known to name one of this package's networks.

        LightningCLI saves the network as a class path, which Lightning's loader would import whatever it names;
        another class is refused here with `CheckpointError`, before anything is imported.
        """
        saved_network(checkpoint_path, peek_checkpoint(checkpoint_path))
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Weights of another network or size: a message naming both, not load_state_dict's key or shape error."""
        try:
            path = self.trainer.ckpt_path
        except RuntimeError:  # not attached to a Trainer: `load_from_checkpoint` builds the right network anyway
            path = None
        check_network(path, checkpoint, self.net, self.state_dict())
        self.temperature = temperature_of(checkpoint)
        self.not_a_digit_threshold = threshold_of(checkpoint)

    def on_fit_start(self) -> None:
        """Training changes the weights a calibration was fitted for: a resumed run's softmax is plain again."""
        self.temperature, self.not_a_digit_threshold = 1.0, None


def hyperparameter_problem(
    net: object, hidden: object, lr: object, lr_schedule: object, non_digit_weight: object
) -> str | None:
    """What is wrong with `MNISTClassifier`'s arguments, as "NAME VALUE: the fix" (None when nothing is).

    The one check of them: `__init__` raises it, and the command line refuses it before anything runs, as
    `--model.NAME VALUE: ...`. Only this package's networks train here: a checkpoint names its network, and loading
    one must never import a class from elsewhere.
    """
    if not (isinstance(hidden, int) and not isinstance(hidden, bool) and hidden >= 1):
        return f"hidden {hidden}: give the hidden layer's units, a whole number of 1 or more (the tutorial's 128)."
    if not (isinstance(lr, int | float) and not isinstance(lr, bool) and 0 < lr < float("inf")):
        return f"lr {lr}: give Adam's learning rate, a number above 0 (Keras' default is 0.001)."
    if lr_schedule not in ("constant", "onecycle"):
        return f"lr_schedule {lr_schedule!r}: use 'constant' or 'onecycle'."
    if not (isinstance(non_digit_weight, int | float) and non_digit_weight >= 0):
        return f"non_digit_weight {non_digit_weight}: give 0 (off) or more."
    if net is not None and network_class(net) is None:
        return (
            f"net {class_path(net)}: only this package's networks train here ({known_networks()}). To train a network"
            " of your own on this data, write a LightningModule for it with MNISTDataModule (README: Use it from"
            " another project)."
        )
    if net is not None and hidden != TUTORIAL_HIDDEN:
        return (
            f"hidden {hidden} sizes the default DenseNet; with a net given, give that network's own arguments"
            " (mnist_dense.model.DenseNet(hidden=N); on the command line --model.net.init_args.hidden N)."
        )
    return None
