"""Calibration: the expected calibration error, the temperature fitted on the validation split, and the checkpoint
carrying it to predict and to the inference module that export and serve use."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
import torch

from mnist_dense import calibration
from mnist_dense.checkpoints import read_checkpoint
from mnist_dense.commands import main
from mnist_dense.data import MNISTDataModule, load_split
from mnist_dense.data.sampling import split_indices
from mnist_dense.deploy.inference import load_inference_model
from mnist_dense.module import MNISTClassifier
from tests.conftest import cpu_trainer
from tests.tiny_runs import fit_tiny


def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with() -> None:
    """Labels drawn from softmax(z / 2.5): the temperature that best explains them is 2.5."""
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(20_000, 10, generator=generator)
    labels = torch.multinomial((logits / 2.5).softmax(dim=1), 1, generator=generator).flatten()
    assert calibration.fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_the_calibration_error_is_the_count_weighted_gap_of_each_bin() -> None:
    """Four images in two bins: confidences 0.95 (right, right) and 0.55 (right, wrong)."""
    probabilities = torch.full((4, 10), 0.05 / 9)
    probabilities[:2, 0], probabilities[2:, 0] = 0.95, 0.55
    probabilities[2:, 1:] = 0.45 / 9
    labels = torch.tensor([0, 0, 0, 3])
    expected = 0.5 * abs(0.95 - 1.0) + 0.5 * abs(0.55 - 0.5)
    assert calibration.calibration_error(probabilities, labels) == pytest.approx(expected, abs=1e-6)
    sums = calibration.bin_sums(probabilities, labels)
    assert calibration.reliability_bins(sums) == [pytest.approx((0.55, 0.5, 2)), pytest.approx((0.95, 1.0, 2))]
    assert calibration.error_of(sums) == pytest.approx(expected, abs=1e-6)  # torchmetrics' ECE from the sums
    halves = calibration.bin_sums(probabilities[:2], labels[:2]) + calibration.bin_sums(probabilities[2:], labels[2:])
    assert torch.equal(halves, sums)  # sums add up across batches (and processes)


def test_calibrate_fits_on_validation_and_predict_and_the_inference_module_answer_with_it(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    log_dir = fit_tiny(tiny_mnist, tmp_path / "runs", "--plots.enabled", "false")
    ckpt = log_dir / "checkpoints" / "last.ckpt"
    calibrated = tmp_path / "calibrated.ckpt"
    calibration.main(["--ckpt_path", str(ckpt), "--output", str(calibrated), "--data.data_dir", str(tiny_mnist)])
    out = capsys.readouterr().out
    saved = read_checkpoint(calibrated)["calibration"]
    temperature = saved["temperature"]
    assert saved["validation_images"] == 100 and f"Temperature {temperature:.3f}" in out
    assert (tmp_path / "reliability_calibrated.png").stat().st_size > 0
    assert "calibration" not in read_checkpoint(ckpt)  # the original is left as it was

    model = MNISTClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    images, _ = load_split(tiny_mnist, "test")
    with torch.no_grad():
        logits = model.net(images[:, None].float() / 255)
    expected = (logits / temperature).softmax(dim=1)
    assert not torch.allclose(expected, logits.softmax(dim=1), atol=1e-3)  # the temperature changes something
    module = load_inference_model(calibrated)
    assert torch.allclose(module(images[:, None].float()), expected, atol=1e-6)
    trainer = cpu_trainer(tmp_path)
    predictions = trainer.predict(model, MNISTDataModule(data_dir=str(tiny_mnist)), ckpt_path=str(calibrated))
    predicted = torch.cat([batch["probabilities"] for batch in predictions])
    assert torch.allclose(predicted, expected, atol=1e-6)
    assert torch.equal(predicted.argmax(dim=1), logits.argmax(dim=1))  # the digit never changes

    # "Not a digit": above the threshold, which 99% of the validation digits classified right stay below.
    threshold = saved["not_a_digit"]["threshold"]
    val_images, val_labels = load_split(tiny_mnist, "train")
    _, val_index = split_indices(len(val_labels), 100)
    with torch.no_grad():
        val_logits = model.net(val_images[val_index][:, None].float() / 255)
    right = val_logits.argmax(dim=1) == val_labels[val_index]
    assert (calibration.energy(val_logits[right]) <= threshold + 1e-6).float().mean() >= 0.99
    folder = tmp_path / "predict"
    main(["predict", "--ckpt_path", str(calibrated), "--data.data_dir", str(tiny_mnist),
          "--trainer.default_root_dir", str(folder), "--trainer.enable_progress_bar", "false"])  # fmt: skip
    with open(next(folder.glob("version_*/predictions.csv"))) as f:
        rows = list(csv.DictReader(f))
    scores = calibration.energy(logits)
    assert [row["not_a_digit"] for row in rows] == ["yes" if s > threshold else "no" for s in scores.tolist()]
    assert [float(row["score"]) for row in rows] == pytest.approx(scores.tolist(), abs=1e-3)


def test_a_run_that_trained_on_every_image_is_refused_and_left_untouched(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    log_dir = fit_tiny(tiny_mnist, tmp_path / "runs", "--plots.enabled", "false", "--data.val_size", "0")
    ckpt = log_dir / "checkpoints" / "last.ckpt"
    before = hashlib.md5(ckpt.read_bytes()).hexdigest()
    with pytest.raises(SystemExit) as stopped:
        calibration.main(["--ckpt_path", str(ckpt), "--data.data_dir", str(tiny_mnist)])
    error = capsys.readouterr().err
    assert stopped.value.code == 1 and str(ckpt) in error and "--data.val_size 5000" in error
    assert len(error.strip().splitlines()) == 1 and hashlib.md5(ckpt.read_bytes()).hexdigest() == before
