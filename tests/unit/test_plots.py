"""The run's pictures show what they claim: the logged metrics, the test's confusion counts, its misclassified digits.

Each picture is a matplotlib Figure; the tests record the figures the code saves and read their artists
(line data, image arrays, text), then compare them with metrics.csv and an independent forward pass.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import ModuleType

import lightning as L
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from mnist_dense.callbacks import RunPlots, plots
from mnist_dense.data import MNISTDataModule, load_split
from mnist_dense.module import MNISTClassifier
from mnist_dense.scaling import to_model_input
from tests.conftest import cpu_trainer
from tests.tiny_runs import fit_tiny, logged, train_tiny

# Two batches of training an epoch: on the tiny digits that leaves about 20 of the 200 test digits wrong.
WEAK_FIT = ("--trainer.limit_train_batches", "2", "--data.normalization", "standard")
CELL = 28 + plots.GRID_PADDING


def record_figures(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> dict[str, Figure]:
    """Every figure `module` saves through `save_figure`, by file name (the files are still written)."""
    saved: dict[str, Figure] = {}
    real_save = module.save_figure

    def save(fig: Figure, path: Path) -> Path:
        saved[Path(path).name] = fig
        return real_save(fig, path)

    monkeypatch.setattr(module, "save_figure", save)
    return saved


def drawn_lines(ax: Axes) -> dict[str, tuple[list[float], list[float]]]:
    """Each line of an axes by its legend label: (x values, y values)."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def logged_per_epoch(log_dir: Path, name: str) -> dict[int, float]:
    """One metric of metrics.csv by epoch, counted from 1 as the curves count them."""
    with open(log_dir / "metrics.csv") as f:
        return {int(row["epoch"]) + 1: float(row[name]) for row in csv.DictReader(f) if row.get(name)}


def cell_of(text, columns: int) -> int:
    """Which grid cell (row-major) a text label sits in."""
    x, y = text.get_position()
    return int(y // CELL) * columns + int(x // CELL)


def test_the_run_pictures_show_the_logged_metrics_the_test_counts_and_its_misclassified_digits(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = record_figures(monkeypatch, plots)
    log_dir = fit_tiny(tiny_mnist, tmp_path / "runs", *WEAK_FIT, "--plots.max_misclassified", "12")
    out = capsys.readouterr().out
    pictures = ["training_curves.png", "confusion_matrix.png", "misclassified.png", "reliability.png"]
    for name in [*pictures, "confusion_matrix.csv"]:
        assert str(log_dir / name) in out and (log_dir / name).stat().st_size > 0  # written, and the path printed
    assert sorted(figures) == sorted(pictures)

    # Training curves: every line is one logged metric of metrics.csv, epoch by epoch.
    loss_ax, acc_ax = figures["training_curves.png"].axes
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
        lines = drawn_lines(ax)
        assert set(lines) == {"training", "validation"}
        for label, stage in (("training", "train"), ("validation", "val")):
            per_epoch = logged_per_epoch(log_dir, f"{stage}_{metric}")
            assert list(per_epoch) == [1, 2]
            assert lines[label][0] == [1, 2]
            assert lines[label][1] == pytest.approx(list(per_epoch.values()), rel=1e-6)

    # An independent forward pass of the checkpoint `fit` tested, on the whole tiny test set.
    (best,) = (log_dir / "checkpoints").glob("epoch*.ckpt")
    assert f"({best})" in out.split("Test accuracy:")[1]
    model = MNISTClassifier.load_from_checkpoint(best, map_location="cpu").eval()
    images, labels = load_split(tiny_mnist, "test")
    inputs, labels = to_model_input(images, "standard"), labels.long()
    with torch.no_grad():
        probabilities = model(inputs).softmax(dim=1)
    predicted = probabilities.argmax(dim=1)
    counts = torch.bincount(labels * 10 + predicted, minlength=100).reshape(10, 10)

    # Confusion matrix: the CSV, the picture's image and its numbers are those counts, and they are `test`'s accuracy.
    with open(log_dir / "confusion_matrix.csv") as f:
        table = torch.tensor([[int(v) for v in row[1:]] for row in list(csv.reader(f))[1:]])
    assert torch.equal(table, counts)
    (ax,) = figures["confusion_matrix.png"].axes
    assert torch.equal(torch.as_tensor(np.asarray(ax.images[0].get_array())), counts)
    written = torch.full((10, 10), -1)
    for text in ax.texts:
        column, row = (round(v) for v in text.get_position())
        written[row, column] = int(text.get_text())
    assert torch.equal(written, counts)
    assert int(counts.sum()) == 200 and int(counts.diagonal().sum()) == round(logged(log_dir, "test_acc")[-1] * 200)
    assert f"({int(counts.diagonal().sum())} of 200 right)" in out

    # Reliability: per bin of the top probability, its accuracy (the bars) and its images; the ECE in the title and
    # the printed line, computed here by hand over 15 equal-width bins.
    confidence, right = probabilities.max(dim=1).values, (predicted == labels).float()
    which = (confidence * 15).ceil().clamp(1, 15).long() - 1
    ece = sum(
        (which == b).float().mean() * (confidence[which == b].mean() - right[which == b].mean()).abs()
        for b in range(15)
        if (which == b).any()
    )
    top, bins = figures["reliability.png"].axes
    heights = sorted(round(patch.get_height(), 6) for patch in top.patches)
    assert heights == sorted(round(float(right[which == b].mean()), 6) for b in range(15) if (which == b).any())
    assert sum(patch.get_height() for patch in bins.patches) == 200
    assert f"ECE {100 * float(ece):.2f}% over 15 bins, 200 images" in top.get_title()
    assert f"(expected calibration error {100 * float(ece):.2f}% over 15 bins)" in out

    # Misclassified: the first 12 wrong test digits, as `make_grid` of their inputs, each titled true->predicted.
    wrong = (predicted != labels).nonzero().flatten()
    assert len(wrong) > 12  # so the cap is tested too
    shown = wrong[:12]
    chosen = inputs[shown]
    scaled = (chosen - chosen.min()) / (chosen.max() - chosen.min())
    expected = make_grid(scaled, nrow=12, padding=plots.GRID_PADDING, pad_value=plots.GRID_PAD_VALUE)
    (ax,) = figures["misclassified.png"].axes
    np.testing.assert_allclose(ax.images[0].get_array(), expected.permute(1, 2, 0).numpy(), atol=1e-6)
    assert [t.get_text() for t in ax.texts] == [f"{labels[i]}->{predicted[i]}" for i in shown.tolist()]
    assert [cell_of(t, 12) for t in ax.texts] == list(range(12))
    assert f"(the first 12 of {len(wrong)})" in out


def test_without_a_logger_the_curves_are_what_the_run_recorded(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = record_figures(monkeypatch, plots)
    alone = tmp_path / "alone"
    train_tiny(tiny_mnist, alone, *WEAK_FIT, "--trainer.logger", "false")
    curves = figures.pop("training_curves.png")
    for name in ("training_curves.png", "confusion_matrix.png", "misclassified.png"):
        assert (alone / name).stat().st_size > 0  # in --trainer.default_root_dir, as Lightning's log_dir is then
    assert not list(alone.rglob("metrics.csv"))

    log_dir = fit_tiny(tiny_mnist, tmp_path / "csv", *WEAK_FIT)  # the same run (same seed) with the CSV logger
    loss_ax, acc_ax = curves.axes
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
        lines = drawn_lines(ax)
        for label, stage in (("training", "train"), ("validation", "val")):
            per_epoch = logged_per_epoch(log_dir, f"{stage}_{metric}")
            assert lines[label][0] == list(per_epoch) == [1, 2]
            assert lines[label][1] == pytest.approx(list(per_epoch.values()), rel=1e-6)


class BarReader(L.LightningModule):
    """Not MNISTClassifier: reads the tiny digits' bar (label k: columns 2+2k to 5+2k), but takes a 3 for an 8."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        columns = images[:, 0, 4:24].mean(dim=1)  # (B, 28): the ink of each column
        logits = torch.stack([columns[:, 2 + 2 * k : 6 + 2 * k].mean(dim=1) for k in range(10)], dim=1)
        return logits[:, [0, 1, 2, 8, 4, 5, 6, 7, 3, 9]]

    def test_step(self, batch, batch_idx: int) -> None:
        pass


def test_any_module_that_maps_images_to_logits_gets_its_test_pictures(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = record_figures(monkeypatch, plots)
    trainer = cpu_trainer(tmp_path, callbacks=[RunPlots(max_misclassified=200)])
    trainer.test(BarReader(), datamodule=MNISTDataModule(data_dir=str(tiny_mnist)), verbose=False)
    _, labels = load_split(tiny_mnist, "test")
    swapped = {3: 8, 8: 3}
    expected = torch.zeros(10, 10, dtype=torch.long)
    for label in labels.tolist():
        expected[label, swapped.get(label, label)] += 1
    (ax,) = figures["confusion_matrix.png"].axes
    assert torch.equal(torch.as_tensor(np.asarray(ax.images[0].get_array())), expected)
    (ax,) = figures["misclassified.png"].axes
    assert [t.get_text() for t in ax.texts] == [f"{y}->{swapped[y]}" for y in labels.tolist() if y in swapped]


# --- each picture as a reader sees it: sizes, titles, axes, labels ----------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as picture:
        return picture.size


def test_the_training_curves_have_a_panel_per_metric_and_a_line_per_stage(tmp_path: Path) -> None:
    epochs = [{"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.4},
              {"epoch": 2, "train_loss": 0.3, "train_acc": 0.9, "val_loss": 0.35}]  # fmt: skip
    fig = plots.curves_figure(epochs)
    loss, accuracy = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["Loss (cross-entropy)", "Accuracy"]
    left, right = (ax.get_subplotspec() for ax in fig.axes)  # side by side: one row, two columns
    assert (left.rowspan, left.colspan, right.rowspan, right.colspan) == (range(1), range(1), range(1), range(1, 2))
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "epoch"] and list(loss.get_xticks()) == [1, 2]
    lines = {line.get_label(): line for line in loss.get_lines()}
    assert (lines["training"].get_marker(), lines["training"].get_linestyle()) == ("o", "-")
    assert (lines["validation"].get_marker(), lines["validation"].get_linestyle()) == ("s", "--")
    assert list(lines["validation"].get_ydata()) == [0.4, 0.35]
    assert [line.get_label() for line in accuracy.get_lines()] == ["training"]  # no val_acc logged: no line
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["training", "validation"]
    assert all(line.get_visible() and line.get_alpha() == 0.3 for line in loss.get_xgridlines())
    assert fig.get_layout_engine().__class__.__name__ == "TightLayoutEngine"
    assert png_size(plots.save_figure(fig, tmp_path / "a" / "b" / "curves.png")) == (1000, 400)  # 10x4 in at 100 dpi


def test_the_confusion_matrix_labels_every_digit_on_both_axes(tmp_path: Path) -> None:
    counts = torch.arange(100).reshape(10, 10)
    fig = plots.confusion_figure(counts)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in range(10)]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(k) for k in range(10)]
    assert torch.equal(torch.as_tensor(np.asarray(ax.images[0].get_array())), counts)
    assert fig.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"
    assert png_size(plots.save_figure(fig, tmp_path / "confusion.png")) == (700, 700)


def test_a_labelled_grid_titles_each_cell_in_its_corner_and_sizes_itself_to_its_cells(tmp_path: Path) -> None:
    images = torch.rand(5, 1, 28, 28)
    fig = plots.labelled_grid_figure(images, ["a", "b", "c", "d", "e"], columns=3, title="Five")
    (ax,) = fig.axes
    assert ax.get_title() == "Five" and not ax.axison
    expected = make_grid(images, nrow=3, padding=2, pad_value=0.5).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ax.images[0].get_array(), expected, atol=1e-6)
    assert ax.images[0].get_clim() == (0, 1)
    for i, text in enumerate(ax.texts):
        row, column = divmod(i, 3)
        assert text.get_position() == (column * CELL + 3, row * CELL + 3)
        assert (text.get_color(), text.get_fontsize(), text.get_va(), text.get_ha()) == ("yellow", 7, "top", "left")
    assert tuple(fig.get_size_inches()) == pytest.approx((3 * 0.85 + 0.2, 2 * 0.85 + 0.5))
    untitled = plots.labelled_grid_figure(images[:2], ["a", "b"], columns=3, inches=1.0)
    assert untitled.axes[0].get_title() == "" and tuple(untitled.get_size_inches()) == pytest.approx((2.2, 1.2))
    single = plots.labelled_grid_figure(images[:1], ["a"], columns=3, inches=1.0)  # one column for one image
    assert tuple(single.get_size_inches()) == pytest.approx((1.2, 1.2))
    assert fig.get_layout_engine().__class__.__name__ == "TightLayoutEngine"


def test_misclassified_digits_are_scaled_together_to_the_grids_range() -> None:
    standardized = (torch.rand(3, 28, 28) - 0.1307) / 0.3081  # model inputs, not pixels
    fig = plots.misclassified_figure(standardized, ["1->7", "4->9", "3->5"])
    (ax,) = fig.axes
    shown = ax.images[0].get_array()
    grid = make_grid(((standardized - standardized.min()) / (standardized.max() - standardized.min()))[:, None],
                     nrow=12, padding=2, pad_value=0.5)  # fmt: skip
    np.testing.assert_allclose(shown, grid.permute(1, 2, 0).numpy(), atol=1e-6)
    assert ax.get_title() == "Misclassified test digits: true -> predicted"
    assert [t.get_text() for t in ax.texts] == ["1->7", "4->9", "3->5"]
    flat = plots.misclassified_figure(torch.zeros(1, 1, 28, 28), ["0->1"])  # all one value: no division by zero
    assert np.isfinite(flat.axes[0].images[0].get_array()).all()
