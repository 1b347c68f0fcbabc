"""Callbacks that tests hand to the real CLI (`--trainer.callbacks+=tests.helpers.NAME`)."""

from __future__ import annotations

import time

import lightning as L
import torch

from mnist_dense.callbacks import SaveOnInterrupt


class PauseAtStep(L.Callback):
    """Prints PAUSED at one global step and waits there (up to a minute) until Ctrl-C or SIGTERM arrives.

    A test then signals a run that is certainly mid-epoch, however loaded the machine is.
    """

    def __init__(self, step: int = 50) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        print(f"PAUSED at step {self.step}", flush=True)
        interrupt = next(c for c in trainer.callbacks if isinstance(c, SaveOnInterrupt))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (trainer.received_sigterm or interrupt.stop_requested):
            time.sleep(0.02)


class SpoilLastEpoch(L.Callback):
    """Scrambles the weights as the last epoch starts, so that the last epoch is surely not the best one."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == trainer.max_epochs - 1:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.mul_(-3.0)
