"""Shifted digits: the batch translations are exact, and shift 0 is the plain test accuracy."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from mnist_dense import MNISTClassifier, shift
from mnist_dense.constants import MNIST_MEAN, MNIST_STD
from mnist_dense.data import MNISTDataModule, load_split
from mnist_dense.translate import random_translate, shift_images, translate
from tests.conftest import tiny_digits
from tests.tiny_runs import fit_tiny, logged
from tests.unit.test_plots import WEAK_FIT, record_figures


def test_translate_moves_each_digit_by_its_own_offset_and_keeps_the_ink() -> None:
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    images[:, 10:18, 12:16] = torch.randint(1, 256, (3, 8, 4), dtype=torch.uint8)
    offsets = torch.tensor([[2, -3], [-4, 4], [0, 0]])
    moved = translate(images, offsets, margin=4)
    assert moved.dtype == torch.uint8 and moved.shape == images.shape
    for image, out, (rows, cols) in zip(images, moved, offsets.tolist(), strict=True):
        assert torch.equal(out, torch.roll(image, (rows, cols), dims=(0, 1)))  # ink far from the edges: a roll
    assert torch.equal(moved.sum(dim=(1, 2), dtype=torch.long), images.sum(dim=(1, 2), dtype=torch.long))


def test_ink_shifted_past_the_edge_is_dropped_not_wrapped() -> None:
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, :, 26:] = 200
    moved = shift_images(image, 0, 3)
    assert moved.max() == 0  # nothing came back on the left


def test_random_translate_stays_within_the_limit() -> None:
    torch.manual_seed(0)
    images = torch.zeros(500, 28, 28, dtype=torch.uint8)
    images[:, 14, 14] = 255
    moved = random_translate(images, 3)
    rows, cols = (moved == 255).nonzero()[:, 1:].T
    assert len(rows) == 500  # one ink pixel each, none lost
    assert rows.min() == 11 and rows.max() == 17 and cols.min() == 11 and cols.max() == 17  # every offset -3..3 used


def test_only_training_batches_are_translated() -> None:
    module = MNISTDataModule(max_translate=3)
    images, labels = tiny_digits(64, seed=3)

    class Trainer:
        training = False

    module.trainer = Trainer()
    evaluated = module.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(evaluated[0], images[:, None].float() / 255)
    Trainer.training = True
    shifted, same_labels = module.on_after_batch_transfer((images, labels), 0)
    assert not torch.equal(shifted, images[:, None].float() / 255) and torch.equal(same_labels, labels)
    assert torch.equal(shifted.sum(dim=(1, 2, 3)) > 0, images.sum(dim=(1, 2)) > 0)  # digits moved, not erased


def test_accuracy_at_shift_zero_is_the_test_accuracy_and_falls_with_shift(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir = fit_tiny(tiny_mnist, tmp_path / "runs", *WEAK_FIT)  # a weak model: about 20 of 200 test digits wrong
    test_acc = logged(log_dir, "test_acc")[-1]
    (best,) = (log_dir / "checkpoints").glob("epoch*.ckpt")  # what `fit` tested
    figures = record_figures(monkeypatch, shift)
    shift.main(["--ckpt_path", str(best), "--names", "tiny", "--max_shift", "3", "--data.data_dir", str(tiny_mnist),
                "--out", str(tmp_path / "shift")])  # fmt: skip
    with open(tmp_path / "shift" / "shift_accuracy.csv") as f:
        table = [float(row["tiny"]) for row in csv.DictReader(f)]
    assert len(table) == 4
    assert table[0] == pytest.approx(test_acc, abs=1e-6)
    # Both would be 1.0 for a model that gets every digit right; here the equality says the same digits are right,
    # read with the normalization the checkpoint was trained with ("standard"; the default "unit" counts otherwise).
    assert test_acc < 0.95
    model, (normalization, _) = shift.load_checkpoint(best)
    images, labels = load_split(tiny_mnist, "test")
    assert normalization == "standard" and shift.accuracy(model, images, labels, "unit") != pytest.approx(test_acc)
    assert table[0] > table[2] > table[3]  # the bars move onto other classes' columns
    out = capsys.readouterr().out
    assert f"{100 * test_acc:.2f}%" in out.split("shift_accuracy.csv")[0]
    for name in ("shift_accuracy.csv", "shift_accuracy.png"):
        assert f"Saved {tmp_path / 'shift' / name}" in out and (tmp_path / "shift" / name).stat().st_size > 0
    (ax,) = figures["shift_accuracy.png"].axes
    (line,) = ax.get_lines()
    assert line.get_label() == "tiny" and list(line.get_xdata()) == [0, 1, 2, 3]
    assert list(line.get_ydata()) == pytest.approx([100 * v for v in table], abs=1e-4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max_shift", "15"], "--max_shift 15: use 0 to 14"),
        (["--names", "a", "b"], "--names: 2 names for 1 checkpoints"),
        (["--data_dir", "x"], "unrecognized arguments: --data_dir"),  # one spelling: the main CLI's --data.data_dir
    ],
)
def test_bad_values_exit_2_with_one_line_naming_the_option(
    capsys: pytest.CaptureFixture, options: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        shift.main(["--ckpt_path", "none.ckpt", *options])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_a_negative_translation_is_refused_at_parse_time(capsys: pytest.CaptureFixture) -> None:
    from mnist_dense.commands import main as cli_main

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--data.max_translate", "-1"])
    assert exit_info.value.code == 2
    assert "data.max_translate" in capsys.readouterr().err


def test_every_shift_is_scored_with_the_normalization_the_checkpoint_was_trained_with(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each row of the table against digits moved by slicing a padded copy and standardized here by hand."""
    log_dir = fit_tiny(tiny_mnist, tmp_path / "runs", *WEAK_FIT, "--test_after_fit", "false")  # a `standard` net
    ckpt = log_dir / "checkpoints" / "last.ckpt"
    record_figures(monkeypatch, shift)
    shift.main(["--ckpt_path", str(ckpt), "--names", "tiny", "--max_shift", "3", "--data.data_dir", str(tiny_mnist),
                "--out", str(tmp_path / "shift")])  # fmt: skip
    with open(tmp_path / "shift" / "shift_accuracy.csv") as f:
        table = [float(row["tiny"]) for row in csv.DictReader(f)]
    net = MNISTClassifier.load_from_checkpoint(ckpt, map_location="cpu").net.eval()
    images, labels = load_split(tiny_mnist, "test")
    padded = torch.nn.functional.pad(images.float(), (14, 14, 14, 14))

    def right(rows: int, cols: int, mean: float, std: float) -> float:
        moved = padded[:, 14 - rows : 42 - rows, 14 - cols : 42 - cols]  # ink pushed past an edge is gone
        with torch.inference_mode():
            return (net((moved[:, None] / 255 - mean) / std).argmax(1) == labels).float().mean().item()

    directions = [(r, c) for r in (-1, 0, 1) for c in (-1, 0, 1) if (r, c) != (0, 0)]
    for size in (1, 2, 3):
        standard = sum(right(r * size, c * size, MNIST_MEAN, MNIST_STD) for r, c in directions) / 8
        unit = sum(right(r * size, c * size, 0.0, 1.0) for r, c in directions) / 8
        assert table[size] == pytest.approx(standard, abs=1e-6)
        assert abs(standard - unit) > 0.01, size  # so the check tells the two normalizations apart


def test_random_translate_of_one_pixel_moves_digits_and_of_zero_draws_nothing() -> None:
    images = torch.zeros(200, 28, 28, dtype=torch.uint8)
    images[:, 14, 14] = 255
    torch.manual_seed(0)
    moved = random_translate(images, 1)
    assert not torch.equal(moved, images) and set(moved.nonzero()[:, 1].tolist()) == {13, 14, 15}
    state = torch.get_rng_state()
    assert random_translate(images, 0) is images  # no shift, and the random stream is left as it was
    assert torch.equal(torch.get_rng_state(), state)
