"""TensorBoard through the CLI: the epoch scalars and the run's pictures, read back from the event files.

A list of loggers (CSV beside TensorBoard) shares one run folder, and `--ckpt_path last` finds the checkpoints
there even when the loggers write outside `--trainer.default_root_dir`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_dense.callbacks import plots
from tests.tiny_runs import logged, train_tiny
from tests.unit.test_plots import WEAK_FIT, drawn_lines, record_figures

PICTURES = ("training_curves", "confusion_matrix", "misclassified")


def csv_beside_tensorboard(save_dir: Path) -> tuple[str, ...]:
    return (
        "--trainer.logger+=CSVLogger", "--trainer.logger.save_dir", str(save_dir),
        "--trainer.logger+=TensorBoardLogger", "--trainer.logger.save_dir", str(save_dir),
    )  # fmt: skip


def read_events(folder: Path) -> EventAccumulator:
    """Every scalar and image of the run's event files (fit and test each write one)."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_tensorboard_beside_csv_holds_every_epoch_the_test_and_the_pictures_in_one_run_folder(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = record_figures(monkeypatch, plots)
    logs = tmp_path / "logs"  # not the run's --trainer.default_root_dir (tmp_path / "runs")
    train_tiny(tiny_mnist, tmp_path / "runs", *WEAK_FIT, *csv_beside_tensorboard(logs))

    (run,) = (logs / "lightning_logs").iterdir()  # both loggers in one version_N
    assert run.name == "version_0"
    for name in ["metrics.csv", "config.yaml", "checkpoints/last.ckpt", *(f"{p}.png" for p in PICTURES)]:
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))

    events = read_events(run)
    for name in ("train_loss", "train_acc", "val_loss", "val_acc"):
        scalars = events.Scalars(name)
        assert len(scalars) == 2  # one per epoch
        assert [s.value for s in scalars] == pytest.approx(logged(run, name), rel=1e-6)
    (test_acc,) = events.Scalars("test_acc")
    assert test_acc.value == pytest.approx(logged(run, "test_acc")[-1], rel=1e-6)

    # The curves drawn are the epochs TensorBoard holds.
    loss_ax, acc_ax = figures["training_curves.png"].axes
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
        lines = drawn_lines(ax)
        for label, stage in (("training", "train"), ("validation", "val")):
            values = [s.value for s in events.Scalars(f"{stage}_{metric}")]
            assert lines[label] == ([1, 2], pytest.approx(values, rel=1e-6))

    # Each picture is an image in TensorBoard, the size of its PNG, and not blank.
    assert set(PICTURES) <= set(events.Tags()["images"])
    steps = {events.Images(tag)[0].step for tag in PICTURES}
    assert steps == {test_acc.step} and test_acc.step > 0  # at the run's global step, as the test's figures are
    for tag in PICTURES:
        (image,) = events.Images(tag)
        shown = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
        assert Image.open(run / f"{tag}.png").size == (image.width, image.height)
        assert shown.std() > 10

    # `--ckpt_path last` finds the run's last.ckpt under the loggers' save_dir and carries on into version_1.
    train_tiny(tiny_mnist, tmp_path / "runs", *WEAK_FIT, *csv_beside_tensorboard(logs), "--ckpt_path", "last",
               "--trainer.max_epochs", "3")  # fmt: skip
    resumed = logs / "lightning_logs" / "version_1"
    assert (resumed / "metrics.csv").is_file() and list(resumed.glob("events.out.tfevents.*"))
    first_steps = [s.step for s in events.Scalars("train_loss")]
    (third_epoch,) = read_events(resumed).Scalars("train_loss")  # only epoch 3 was trained: it resumed
    assert third_epoch.step == first_steps[1] + (first_steps[1] - first_steps[0])
    assert not list((tmp_path / "runs").rglob("*.ckpt"))
