"""Two baselines that `make bench` measures the package against, on the same network and optimizer.

- usual-port: what a first Lightning port of the tutorial usually looks like: torchvision's `MNIST`
  dataset with per-sample `ToTensor` + `Normalize`, a shuffled `DataLoader` at batch 32, automatic
  optimization and `self.log` of loss and accuracy every step.
- plain-loop: a plain PyTorch loop over the in-memory uint8 tensors, one forward/backward/Adam step
  per batch of 32, shuffled each epoch from (seed, epoch) as the package does.

`python -m benchmarks.baselines usual-port|plain-loop --epochs 5` prints one line starting with
`RESULT ` followed by JSON: seconds of training per epoch and the final test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.marks import RESULT_PREFIX, mark, mark_exit
from mnist_dense.callbacks import RunPlots
from mnist_dense.constants import (
    KERAS_ADAM_EPS,
    MNIST_MEAN,
    MNIST_STD,
    NUM_CLASSES,
    TUTORIAL_BATCH_SIZE,
    TUTORIAL_LR,
)
from mnist_dense.data import load_split
from mnist_dense.data.sampling import epoch_order, split_indices
from mnist_dense.model import DenseNet
from mnist_dense.scaling import to_model_input

BATCH_SIZE, LR = TUTORIAL_BATCH_SIZE, TUTORIAL_LR
# Anywhere on a line: a progress bar's carriage returns can put other output before it.
RESULT_LINE = re.compile(re.escape(RESULT_PREFIX) + r"(\{.*\})")


def run_child(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> tuple[str, float, Any]:
    """One benchmark process, its output in `log_path`: (output, wall seconds, its own rusage from `os.wait4`).

    A failed process stops the benchmark with the end of its log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    output = log_path.read_text()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = "\n".join(output.splitlines()[-15:])
        raise SystemExit(f"error: `{shlex.join(command)}` exited with {code}; its output ({log_path}) ends:\n{tail}")
    return output, seconds, usage


def result_lines(output: str) -> list[dict]:
    """The JSON of every RESULT line a benchmark process printed."""
    return [json.loads(found) for found in RESULT_LINE.findall(output)]


def plain_loop(data_dir: str, epochs: int, seed: int, val_size: int, limit: int | None) -> dict:
    """One forward, backward and Adam step per batch; the same split and shuffle rule as the package."""
    # A plain PyTorch script does not import Lightning, which sets this (this module imports it, and so does
    # mnist_dense): with it, every Adam step of torch 2.14 asks `torch.cuda.is_available()` through NVML, and a
    # CUDA build of torch on a machine without NVML tries to dlopen it each time, about 0.1-0.3 ms a step.
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    mark("imported")
    torch.manual_seed(seed)
    images, labels = load_split(data_dir, "train")
    train_index, _ = split_indices(len(labels), val_size)
    train_images, train_labels = images[train_index], labels[train_index]
    test_images, test_labels = load_split(data_dir, "test")
    net = DenseNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, eps=KERAS_ADAM_EPS, fused=True)  # as the package has it
    epoch_seconds, epoch_cpu_seconds = [], []
    mark("train_start")
    for epoch in range(epochs):
        start, cpu_start = time.perf_counter(), time.process_time()
        batches = epoch_order(len(train_labels), seed, epoch).split(BATCH_SIZE)
        for index in batches[:limit]:
            loss = F.cross_entropy(net(to_model_input(train_images[index])), train_labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        epoch_seconds.append(time.perf_counter() - start)
        epoch_cpu_seconds.append(time.process_time() - cpu_start)
    mark("train_end")
    mark("test_start")
    with torch.no_grad():
        predicted = net(to_model_input(test_images)).argmax(1)
    accuracy = (predicted == test_labels).float().mean().item()
    mark("test_end")
    return {"epoch_seconds": epoch_seconds, "epoch_cpu_seconds": epoch_cpu_seconds, "test_acc": accuracy}


class UsualPortModule(L.LightningModule):
    """Automatic optimization, loss and accuracy logged every step, as tutorials usually show."""

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.classification import MulticlassAccuracy

        self.net = DenseNet()
        self.train_acc = MulticlassAccuracy(num_classes=NUM_CLASSES, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=NUM_CLASSES, average="micro")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, targets = batch
        logits = self.net(images)
        loss = F.cross_entropy(logits, targets)
        self.train_acc(logits, targets)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", self.train_acc, prog_bar=True)
        return loss

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, targets = batch
        self.test_acc(self.net(images), targets)
        self.log("test_acc", self.test_acc)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=LR)


class EpochTimer(L.Callback):
    """Seconds from each training epoch's start to its end (validation and checkpoints excluded).

    Both wall-clock seconds and the process's CPU seconds (`time.process_time`): on a machine shared with other
    jobs the CPU seconds move much less than the wall clock (with one torch thread they are the work done).
    """

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self.epoch_cpu_seconds: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # the epoch's training ends with its last batch
        self._last, self._cpu_last = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_seconds.append(self._last - self._start)
        self.epoch_cpu_seconds.append(self._cpu_last - self._cpu_start)
        if getattr(trainer, "is_global_zero", True):
            result = {
                "epoch": trainer.current_epoch,
                "train_seconds": self.epoch_seconds[-1],
                "train_cpu_seconds": self.epoch_cpu_seconds[-1],
            }
            # On a line of its own: a progress bar may have left the cursor in the middle of one.
            print(f"\n{RESULT_PREFIX}{json.dumps(result)}", flush=True)


class ProcessMarks(L.Callback):
    """Prints the moments of a fit-then-test process that a callback sees (`benchmarks.marks`), and its exit.

    Add it first (`--trainer.callbacks+=` puts it before the CLI's own callbacks), so that its `on_fit_end` and
    `on_test_end` come before `RunPlots` draws: the pictures are then the stretches up to the next hooks (`setup`
    and `teardown` of the test). It refuses to run after `RunPlots`, where the split would be wrong.
    """

    def __init__(self) -> None:
        mark("made")
        mark_exit()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        plots = [i for i, c in enumerate(trainer.callbacks) if isinstance(c, RunPlots)]
        if plots and trainer.callbacks.index(self) > plots[0]:
            raise RuntimeError("ProcessMarks must come before RunPlots in trainer.callbacks")
        if stage == "test":
            mark("test_setup")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mark("train_start")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mark("train_end")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mark("fit_end")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mark("test_start")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mark("test_end")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "test":
            mark("test_teardown")


def usual_port(data_dir: str, epochs: int, seed: int, limit: int | None, root_dir: str) -> dict:
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import MNIST

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    L.seed_everything(seed, verbose=False)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    load_split(data_dir, "train"), load_split(data_dir, "test")  # checked and decompressed as the package does
    train = DataLoader(MNIST(data_dir, train=True, transform=transform), batch_size=BATCH_SIZE, shuffle=True)
    test = DataLoader(MNIST(data_dir, train=False, transform=transform), batch_size=BATCH_SIZE)
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        limit_train_batches=limit,
        accelerator="cpu",
        devices=1,
        default_root_dir=root_dir,
        callbacks=[ProcessMarks(), timer],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = UsualPortModule()
    trainer.fit(model, train)
    results = trainer.test(model, test, verbose=False)
    return {
        "epoch_seconds": timer.epoch_seconds,
        "epoch_cpu_seconds": timer.epoch_cpu_seconds,
        "test_acc": results[0]["test_acc"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=["usual-port", "plain-loop"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default="data")
    parser.add_argument(
        "--val_size", type=int, default=0, help="plain-loop: training images held out, as --data.val_size"
    )
    parser.add_argument("--limit", type=int, default=None, help="training batches per epoch (tiny runs in tests)")
    parser.add_argument("--root_dir", default="runs/usual_port", help="usual-port: the Trainer's default_root_dir")
    args = parser.parse_args(argv)
    if args.epochs < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--epochs and --limit must be at least 1")
    if args.which == "plain-loop":
        mark_exit()  # the usual port's ProcessMarks registers its own
        result = plain_loop(args.data_dir, args.epochs, args.seed, args.val_size, args.limit)
    else:
        result = usual_port(args.data_dir, args.epochs, args.seed, args.limit, args.root_dir)
    print(f"{RESULT_PREFIX}{json.dumps({'which': args.which, **result})}")


if __name__ == "__main__":
    main()
