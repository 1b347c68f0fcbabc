"""The Trainer flags a Lightning user reaches for, each run through the real CLI and held to its documented meaning.

Modelled on lightning-hydra-template's tests/test_train.py. Every run is `mnist_dense.commands.main` in this process,
on the tiny fake digits of conftest (500 training images after a 100-image validation split, so 16 steps of 32
an epoch). What a flag did is read back from what the run left: the batches and validations `LoopRecorder` saw,
metrics.csv, the checkpoints, and what the CLI printed. Expected values are derived from the flags, not copied
from a run.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import NamedTuple

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.tuner import Tuner
from torch import Tensor, nn

from mnist_dense import MNISTClassifier
from mnist_dense.checkpoints import read_checkpoint
from mnist_dense.commands import main
from mnist_dense.data import MNISTDataModule
from tests.conftest import cpu_trainer
from tests.helpers import LoopRecorder, read_events

VAL = 100  # of the 600 tiny training digits
TRAIN_IMAGES = 600 - VAL
TEST_IMAGES = 200
BATCH = 32
STEPS = math.ceil(TRAIN_IMAGES / BATCH)  # training batches in a full epoch
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
QUIET += ["--plots.enabled", "false"]

pytestmark = pytest.mark.usefixtures("one_thread")


class Run(NamedTuple):
    root: Path
    output: str

    def events(self, kind: str) -> list[dict]:
        return read_events(self.root / "events.jsonl", kind)

    def batches_per_epoch(self) -> list[int]:
        epochs = [event["epoch"] for event in self.events("train_batch")]
        return [epochs.count(epoch) for epoch in range(max(epochs) + 1)]

    def metrics(self) -> list[dict[str, str]]:
        with (self.root / "version_0" / "metrics.csv").open() as f:
            return list(csv.DictReader(f))

    def checkpoint(self, name: str = "last.ckpt") -> dict:
        return read_checkpoint(self.root / "version_0" / "checkpoints" / name)

    def test_accuracy(self) -> tuple[float, int]:
        """What the CLI printed after fit: `Test accuracy: X% on N images`."""
        found = re.search(r"Test accuracy: ([\d.]+)% on ([\d,]+) images", self.output)
        assert found, self.output[-2000:]
        return float(found.group(1)) / 100, int(found.group(2).replace(",", ""))


@pytest.fixture
def fit(tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    """`python -m mnist_dense fit ARGS` on the tiny digits, with a `LoopRecorder` watching the loops."""

    def run(*args: str, test_after_fit: bool = False) -> Run:
        root = tmp_path / "run"
        root.mkdir()
        data = ["--data.data_dir", str(tiny_mnist), "--data.val_size", str(VAL), "--data.batch_size", str(BATCH)]
        recorder = [
            "--trainer.callbacks+=tests.helpers.LoopRecorder",
            "--trainer.callbacks.path",
            str(root / "events.jsonl"),
        ]
        main(["fit", *data, "--trainer.default_root_dir", str(root), *QUIET, *recorder,
              "--test_after_fit", str(test_after_fit).lower(), *args])  # fmt: skip
        return Run(root, capsys.readouterr().out)

    return run


def every(interval: int, last: int, start: int = 0) -> list[int]:
    """start + interval, start + 2 * interval, ... up to start + last."""
    return [start + k for k in range(interval, last + 1, interval)]


def adam_steps(checkpoint: dict) -> set[int]:
    return {int(state["step"]) for state in checkpoint["optimizer_states"][0]["state"].values()}


# --- how many batches each epoch trains, and when validation runs -----------------------------------


class Loop(NamedTuple):
    flags: list[str]
    epochs: int
    batches: list[int]  # training batches in each epoch
    validations: list[int]  # the global steps at which validation ran
    accumulate: int = 1


def accumulating(batches: int) -> Loop:
    """One optimizer step per `batches` batches, and one for the rest at an epoch's end; validation at epoch ends."""
    per_epoch = math.ceil(STEPS / batches)
    flags = ["--trainer.accumulate_grad_batches", str(batches)]
    return Loop(flags, 2, [STEPS] * 2, every(per_epoch, 2 * per_epoch), accumulate=batches)


HALF = int(STEPS * 0.5)  # Lightning takes int(fraction * batches) for a float limit or interval
LOOPS = {
    "limit_train_batches=5": Loop(["--trainer.limit_train_batches", "5"], 3, [5] * 3, [5, 10, 15]),
    "limit_train_batches=0.5": Loop(["--trainer.limit_train_batches", "0.5"], 2, [HALF] * 2, [HALF, 2 * HALF]),
    "val_check_interval=5": Loop(
        ["--trainer.val_check_interval", "5"], 2, [STEPS] * 2, every(5, STEPS) + every(5, STEPS, start=STEPS)
    ),
    "val_check_interval=0.5": Loop(["--trainer.val_check_interval", "0.5"], 2, [STEPS] * 2, every(HALF, 2 * STEPS)),
    "val_check_interval=20 across epochs": Loop(
        ["--trainer.check_val_every_n_epoch", "null", "--trainer.val_check_interval", "20"],
        3,
        [STEPS] * 3,
        every(20, 3 * STEPS),
    ),
    "check_val_every_n_epoch=2": Loop(
        ["--trainer.check_val_every_n_epoch", "2"], 4, [STEPS] * 4, every(2 * STEPS, 4 * STEPS)
    ),
    # the run stops before the first epoch ends, where validation would have run
    "max_steps=7 (mid-epoch)": Loop(["--trainer.max_steps", "7"], 5, [7], []),
    "max_steps=20 (into epoch 2)": Loop(["--trainer.max_steps", "20"], 5, [STEPS, 20 - STEPS], [STEPS]),
    **{f"accumulate_grad_batches={k}": accumulating(k) for k in (2, 3)},
}


@pytest.mark.parametrize("loop", LOOPS.values(), ids=LOOPS.keys())
def test_loop_flags_train_and_validate_the_batches_they_name(fit, loop: Loop) -> None:
    """global_step counts optimizer steps: with accumulation, one per `accumulate` batches and one at an epoch's end.

    Validation rows in metrics.csv must match the validations run, since the module logs once per validation.
    """
    run = fit(*loop.flags, "--trainer.max_epochs", str(loop.epochs))
    assert run.batches_per_epoch() == loop.batches
    steps = sum(math.ceil(batches / loop.accumulate) for batches in loop.batches)
    assert [event["global_step"] for event in run.events("validation")] == loop.validations
    assert sum(1 for row in run.metrics() if row.get("val_acc")) == len(loop.validations)
    last = run.checkpoint()
    assert last["global_step"] == steps
    assert adam_steps(last) == {steps}  # Adam stepped once per global step, never per accumulated batch


def test_seeds_shuffle_every_epoch_their_own_way_and_the_same_seed_identically(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    """`--seed_everything N`: rerunning N repeats every epoch's order; no epoch of another seed's run repeats one."""

    def epoch_orders(seed: int, name: str, epochs: int = 3) -> list[tuple[int, ...]]:
        root = tmp_path / name
        root.mkdir()
        recorder = ["--trainer.callbacks+=tests.helpers.LoopRecorder", "--trainer.callbacks.path", str(root / "ev")]
        main(["fit", "--seed_everything", str(seed), "--data.data_dir", str(tiny_mnist), "--data.val_size", str(VAL),
              "--trainer.max_epochs", str(epochs), "--test_after_fit", "false", "--trainer.default_root_dir",
              str(root), *QUIET, *recorder])  # fmt: skip
        batches = read_events(root / "ev", "train_batch")
        return [tuple(n for b in batches if b["epoch"] == epoch for n in b["labels"]) for epoch in range(epochs)]

    first, again, other = epoch_orders(0, "first"), epoch_orders(0, "again"), epoch_orders(1, "other")
    assert first == again
    assert len(set(first + other)) == len(first + other)  # six epochs, six orders
    assert {tuple(sorted(order)) for order in first + other} == {tuple(sorted(first[0]))}  # of the same 500 digits


def test_fast_dev_run_runs_one_batch_of_each_loop_and_writes_nothing(fit) -> None:
    """fast_dev_run: one training, one validation and one test batch; loggers and checkpoints are switched off."""
    run = fit("--trainer.fast_dev_run", "true", "--data.eval_batch_size", "50", test_after_fit=True)
    assert len(run.events("train_batch")) == 1
    assert [event["images"] for event in run.events("validation")] == [50]
    assert [event["images"] for event in run.events("test")] == [50]
    assert run.test_accuracy()[1] == 50 and "(final weights)" in run.output
    assert not list(run.root.rglob("*.ckpt")) and not list(run.root.rglob("metrics.csv"))


def test_overfit_batches_trains_the_same_first_batches_every_epoch(fit, tiny_mnist: Path) -> None:
    """overfit_batches=2: the first two batches of the training set in order (shuffling off), every epoch.

    It also limits validation to 2 batches of the validation set.
    """
    run = fit("--trainer.overfit_batches", "2", "--trainer.max_epochs", "3", "--data.eval_batch_size", "30")
    assert run.batches_per_epoch() == [2, 2, 2]
    dataset = MNISTDataModule(str(tiny_mnist), val_size=VAL, batch_size=BATCH)
    dataset.setup("fit")
    training_set = dataset.train_dataloader().dataset
    first_batches = [[int(training_set[i][1]) for i in range(k * BATCH, (k + 1) * BATCH)] for k in range(2)]
    assert [event["labels"] for event in run.events("train_batch")] == first_batches * 3
    assert [event["images"] for event in run.events("validation")] == [2 * 30] * 3
    assert run.checkpoint()["global_step"] == 6


def images_in(limit: str, images: int, batch_size: int) -> int:
    """Images in the first batches a limit_*_batches value allows: an int counts batches, a float is a fraction."""
    batches = math.ceil(images / batch_size)
    allowed = int(limit) if limit.isdigit() else int(batches * float(limit))
    return min(allowed * batch_size, images)


@pytest.mark.parametrize(("limit_val", "limit_test"), [("2", "3"), ("0.5", "0.5")])
def test_limit_val_and_test_batches_set_how_many_images_are_evaluated(fit, limit_val: str, limit_test: str) -> None:
    eval_batch = 30
    run = fit("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--data.eval_batch_size",
              str(eval_batch), "--trainer.limit_val_batches", limit_val, "--trainer.limit_test_batches", limit_test,
              test_after_fit=True)  # fmt: skip
    assert [event["images"] for event in run.events("validation")] == [images_in(limit_val, VAL, eval_batch)]
    test_images = images_in(limit_test, TEST_IMAGES, eval_batch)
    assert [event["images"] for event in run.events("test")] == [test_images]
    assert run.test_accuracy()[1] == test_images


@pytest.mark.parametrize(
    ("algorithm", "clip", "measure", "precision"),
    [("norm", 0.01, "norm", "32-true"), ("value", 0.001, "max_abs", "32-true"), ("norm", 0.01, "norm", "bf16-mixed")],
    ids=["norm", "value", "norm-bf16-mixed"],
)
def test_gradient_clip_val_bounds_the_gradients_the_optimizer_steps_with(
    fit, algorithm: str, clip: float, measure: str, precision: str
) -> None:
    """Lightning clips after `on_before_optimizer_step`: the recorder sees the gradients before and after clipping.
    Mixed precision: Lightning refuses to clip for a fused Adam, so the module takes torch's default Adam there."""
    run = fit("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.gradient_clip_val",
              str(clip), "--trainer.gradient_clip_algorithm", algorithm, "--trainer.precision", precision)  # fmt: skip
    before, after = run.events("before_clip"), run.events("after_step")
    assert len(before) == len(after) == 5
    assert all(event[measure] > clip for event in before)  # so every step needed clipping
    assert all(event[measure] == pytest.approx(clip, rel=1e-4) for event in after)


@pytest.mark.parametrize(
    ("precision", "compute_dtype"), [("32-true", "torch.float32"), ("bf16-mixed", "torch.bfloat16")]
)
def test_precision_sets_the_compute_dtype_and_keeps_float32_weights(fit, precision: str, compute_dtype: str) -> None:
    """bf16-mixed on the CPU: layers compute in bfloat16 under autocast; the weights and their updates stay float32."""
    run = fit("--trainer.precision", precision, "--trainer.max_epochs", "2", test_after_fit=True)
    (layers,) = run.events("layer_dtypes")
    assert set(layers["dtypes"].values()) == {compute_dtype}
    assert {tensor.dtype for tensor in run.checkpoint()["state_dict"].values()} == {torch.float32}
    # Adam's fused kernel in full precision; torch's default where Lightning's mixed-precision plugin unscales
    (adam,) = run.checkpoint()["optimizer_states"][0]["param_groups"]
    assert adam["fused"] is (True if precision == "32-true" else None)
    losses = [float(row["train_loss"]) for row in run.metrics() if row["train_loss"]]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses) and losses[1] < losses[0]
    accuracy, images = run.test_accuracy()
    assert accuracy > 0.8 and images == TEST_IMAGES


@pytest.mark.parametrize(("every_n", "accumulate"), [(5, 1), (3, 2)])
def test_model_checkpoint_every_n_train_steps_saves_at_every_nth_optimizer_step(
    fit, tmp_path: Path, every_n: int, accumulate: int
) -> None:
    """every_n_train_steps counts global steps (optimizer steps), so accumulation spaces the files further apart."""
    folder = tmp_path / "steps"
    run = fit("--trainer.max_epochs", "2", "--trainer.accumulate_grad_batches", str(accumulate),
              "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps", str(every_n),
              "--trainer.callbacks.save_top_k", "-1", "--trainer.callbacks.dirpath", str(folder))  # fmt: skip
    steps_per_epoch = math.ceil(STEPS / accumulate)
    expected = every(every_n, 2 * steps_per_epoch)
    saved = {}
    for path in folder.glob("*.ckpt"):
        checkpoint = read_checkpoint(path)
        saved[checkpoint["global_step"]] = checkpoint
        assert path.name == f"epoch={checkpoint['epoch']}-step={checkpoint['global_step']}.ckpt"
    assert sorted(saved) == expected
    for step, checkpoint in saved.items():
        assert checkpoint["epoch"] == (step - 1) // steps_per_epoch
        assert adam_steps(checkpoint) == {step}
    assert run.checkpoint()["global_step"] == 2 * steps_per_epoch


@pytest.mark.parametrize("accumulate", [1, 2])
def test_onecycle_spans_the_optimizer_steps_that_limits_and_accumulation_leave(fit, accumulate: int) -> None:
    """The one-cycle schedule must warm up, peak at --model.lr and anneal to ~0 within the steps that really run."""
    lr = 1e-3
    run = fit("--model.lr_schedule", "onecycle", "--model.lr", str(lr), "--trainer.max_epochs", "3",
              "--trainer.limit_train_batches", "5", "--trainer.accumulate_grad_batches", str(accumulate),
              "--trainer.callbacks+=LearningRateMonitor", "--trainer.callbacks.logging_interval", "step",
              "--trainer.log_every_n_steps", "1")  # fmt: skip
    steps = 3 * math.ceil(5 / accumulate)
    last = run.checkpoint()
    assert last["global_step"] == steps
    (schedule,) = last["lr_schedulers"]
    assert schedule["total_steps"] == schedule["last_epoch"] == steps
    by_step = {int(row["step"]): float(row["lr-Adam"]) for row in run.metrics() if row.get("lr-Adam")}
    assert sorted(by_step) == list(range(steps))  # the rate each optimizer step used
    rates = [by_step[step] for step in range(steps)]
    peak = rates.index(max(rates))
    assert 0 < peak < steps - 1
    assert rates[: peak + 1] == sorted(rates[: peak + 1]) and rates[peak:] == sorted(rates[peak:], reverse=True)
    assert max(rates) > 0.9 * lr and rates[-1] < 1e-3 * lr


def test_lr_find_suggests_a_rate_and_leaves_a_clean_state_for_fit(tiny_mnist: Path, tmp_path: Path) -> None:
    """Through the Python API: LightningCLI has no tuner subcommand.

    The finder trains on its own, then restores the weights and the loops, so the fit that follows counts its own
    steps from zero and sizes the one-cycle schedule on them, peaking at the suggested rate.
    """
    model = MNISTClassifier(lr_schedule="onecycle")
    data = MNISTDataModule(str(tiny_mnist), val_size=VAL, batch_size=BATCH)
    trainer = cpu_trainer(tmp_path, max_epochs=2)
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    finder = Tuner(trainer).lr_find(model, datamodule=data, num_training=40)
    suggestion = finder.suggestion()
    assert suggestion is not None and math.isfinite(suggestion) and 1e-8 <= suggestion <= 1
    assert model.hparams.lr == suggestion
    assert all(torch.equal(tensor, weights[name]) for name, tensor in model.state_dict().items())

    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 2 * STEPS
    optimizer = trainer.optimizers[0]
    assert {int(state["step"]) for state in optimizer.state.values()} == {2 * STEPS}
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == scheduler.last_epoch == 2 * STEPS
    assert optimizer.param_groups[0]["max_lr"] == suggestion


# --- another model on the same data module ----------------------------------------------------------


class SmallConvNet(L.LightningModule):
    """Conv2d(1, 8, 3) -> ReLU -> MaxPool(2) -> Linear -> 10: a model that needs images with a channel axis."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 13 * 13, 10)
        )

    def step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, labels = batch
        assert images.dtype == torch.float32 and images.shape[1:] == (1, 28, 28), (images.dtype, images.shape)
        assert labels.dtype == torch.int64 and labels.shape == (len(images),), (labels.dtype, labels.shape)
        logits = self.net(images)
        loss = F.cross_entropy(logits, labels)
        self.log(f"{stage}_loss", loss)
        self.log(f"{stage}_acc", (logits.argmax(dim=1) == labels).float().mean())
        return loss

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self.step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self.step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_a_conv_net_of_its_own_trains_on_the_data_module_with_mid_epoch_validation_and_checkpoints(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    """The data module serves any model torchvision-style batches; the loop flags work for it as for ours."""
    events, folder = tmp_path / "events.jsonl", tmp_path / "steps"
    every_4 = ModelCheckpoint(dirpath=folder, every_n_train_steps=4, save_top_k=-1)
    trainer = cpu_trainer(tmp_path, max_epochs=2, val_check_interval=5, enable_checkpointing=True,
                          callbacks=[every_4, LoopRecorder(str(events))])  # fmt: skip
    data = MNISTDataModule(str(tiny_mnist), val_size=VAL, batch_size=BATCH)
    model = SmallConvNet()
    trainer.fit(model, datamodule=data)

    assert [event["global_step"] for event in read_events(events, "validation")] == every(5, STEPS) + every(
        5, STEPS, start=STEPS
    )
    saved = [torch.load(path, weights_only=True)["global_step"] for path in folder.glob("*.ckpt")]
    assert sorted(saved) == every(4, 2 * STEPS)
    (result,) = trainer.test(model, datamodule=data, verbose=False)
    assert result["test_acc"] > 0.8
