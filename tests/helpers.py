"""Callbacks that tests hand to the real CLI (`--trainer.callbacks+=tests.helpers.NAME`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary

from mnist_dense.callbacks import SaveOnInterrupt
from mnist_dense.data import MNISTDataError


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


class PauseUntilFile(L.Callback):
    """Prints PAUSED at one global step and waits there (up to a minute) until the file `path` exists.

    A test then holds a run mid-trial while it does something else (kills another worker), and lets it go on.
    """

    def __init__(self, path: str, step: int = 3) -> None:
        self.path = Path(path)
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step != self.step or self.path.exists():
            return
        print(f"PAUSED at step {self.step}", flush=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.path.exists():
            time.sleep(0.02)


class ThreadsSeen(L.Callback):
    """Writes the number of torch threads each training step computes with to `path`, one line a step."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        with open(self.path, "a") as f:
            f.write(f"{torch.get_num_threads()}\n")


class SpoilLastEpoch(L.Callback):
    """Scrambles the weights after the last epoch's validation: its last.ckpt is surely worse than the best one."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == trainer.max_epochs - 1:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.mul_(-3.0)


class LoopRecorder(L.Callback):
    """Writes what the Trainer's loops did to `path` (JSON lines), for tests to hold against a flag's meaning.

    Events: "train_batch" (the labels each training step took, and the batch's shapes and dtypes), "before_clip"
    and "after_step" (gradients before Lightning clips them, and as the optimizer used them: Lightning calls
    `on_before_optimizer_step`, then clips, then steps, and zeroes them only in the next step's closure),
    "layer_dtypes" (the output dtype of each layer in the first training forward), and "validation"/"test"
    (the global step it ran at and how many images it saw; the sanity check is left out).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.images = 0
        self.hooks: list = []
        self.layer_dtypes: dict[str, str] = {}

    def write(self, event: str, **fields) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"event": event, **fields}) + "\n")

    @staticmethod
    def gradients(pl_module: L.LightningModule) -> dict[str, float]:
        grads = [p.grad.detach().float() for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return {}
        return {"norm": float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))),
                "max_abs": max(float(g.abs().max()) for g in grads)}  # fmt: skip

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def remember(name: str):
            def hook(module, inputs, output) -> None:
                self.layer_dtypes.setdefault(name, str(output.dtype))

            return hook

        for name, module in pl_module.named_modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                self.hooks.append(module.register_forward_hook(remember(name)))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        images, labels = batch
        self.write("train_batch", epoch=trainer.current_epoch, batch_idx=batch_idx, global_step=trainer.global_step,
                   labels=labels.tolist(), shape=list(images.shape), dtype=str(images.dtype),
                   label_dtype=str(labels.dtype))  # fmt: skip

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.hooks:
            for hook in self.hooks:
                hook.remove()
            self.hooks = []
            self.write("layer_dtypes", dtypes=self.layer_dtypes)
        self.write("after_step", global_step=trainer.global_step, **self.gradients(pl_module))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        self.write("before_clip", global_step=trainer.global_step, **self.gradients(pl_module))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.images = 0

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int, dataloader_idx=0):
        self.images += len(batch[1])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.write("validation", epoch=trainer.current_epoch, global_step=trainer.global_step, images=self.images)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.images = 0

    def on_test_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int, dataloader_idx=0) -> None:
        self.images += len(batch[1])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write("test", images=self.images)


def read_events(path, event: str) -> list[dict]:
    """The events of one kind that a `LoopRecorder` wrote, in order."""
    with open(path) as f:
        return [e for e in map(json.loads, f) if e["event"] == event]


class RecordCallbacks(L.Callback):
    """Writes to `path` (JSON) which progress bar and summary callbacks the Trainer runs with, as fit starts."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bar = trainer.progress_bar_callback
        record = {
            "bar": type(bar).__name__ if bar is not None else None,
            "refresh_rate": getattr(bar, "refresh_rate", None),
            "summaries": [type(c).__name__ for c in trainer.callbacks if isinstance(c, ModelSummary)],
            "limit_val_batches": trainer.limit_val_batches,
        }
        with open(self.path, "w") as f:
            json.dump(record, f)


class FailAtStep(L.Callback):
    """Raises at one global step, as a full disk or a broken data file would: `error` "runtime" (a RuntimeError, out
    of `main` as it is) or "data" (MNISTDataError, which `main` turns into its message and exit status 1)."""

    def __init__(self, step: int = 2, error: str = "runtime") -> None:
        self.step, self.error = step, error

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            if self.error == "data":
                raise MNISTDataError(f"FailAtStep: a data error at step {self.step}")
            raise RuntimeError(f"FailAtStep: an error at step {self.step}")
