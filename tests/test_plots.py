"""After fit and test, the run's folder holds real pictures and a confusion matrix of the whole test set."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_dense.callbacks.plots import save_misclassified
from tests.tiny_runs import fit_tiny, logged


def test_fit_writes_curves_confusion_matrix_and_misclassified_digits(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    log_dir = fit_tiny(tiny_mnist, tmp_path / "runs")
    out = capsys.readouterr().out
    for name in ("training_curves.png", "confusion_matrix.png"):
        assert str(log_dir / name) in out  # the paths are printed
    with Image.open(log_dir / "training_curves.png") as curves:
        assert curves.size == (1000, 400)
    with Image.open(log_dir / "confusion_matrix.png") as matrix_png:
        assert matrix_png.size == (700, 700)
    with open(log_dir / "confusion_matrix.csv") as f:
        rows = list(csv.reader(f))[1:]
    matrix = torch.tensor([[int(v) for v in row[1:]] for row in rows])
    assert matrix.shape == (10, 10)
    assert int(matrix.sum()) == 200  # every tiny test digit, once
    test_acc = logged(log_dir, "test_acc")[-1]
    assert int(matrix.diagonal().sum()) == round(test_acc * 200)  # the same predictions `test` counted
    wrong = 200 - int(matrix.diagonal().sum())
    assert (log_dir / "misclassified.png").exists() == (wrong > 0)


def test_misclassified_grid_has_one_cell_per_digit(tmp_path: Path) -> None:
    images = torch.rand(14, 28, 28) * 3 - 0.5  # standardized inputs are not in [0, 1]
    path = save_misclassified(images, [f"{i % 10}->{(i + 1) % 10}" for i in range(14)], tmp_path / "wrong.png")
    with Image.open(path) as grid:
        width, height = grid.size
    assert (width, height) == (1040, 220)  # 12 columns, 2 rows at 0.85 inch and 100 dpi, plus margins
