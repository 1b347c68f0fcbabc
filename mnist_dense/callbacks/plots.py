"""`RunPlots`: the pictures of a run, written into its log folder, shown in TensorBoard, and their paths printed.

After `fit`: training_curves.png (loss and accuracy per epoch, train and validation). After `test`:
confusion_matrix.png (torchmetrics' own confusion matrix and its `plot()`), its counts as
confusion_matrix.csv, misclassified.png (test digits the model got wrong, true -> predicted), and
reliability.png (accuracy against the softmax's confidence, with the expected calibration error).
Each picture also goes to every `TensorBoardLogger` of the run as an image (`add_figure`); the curves come
from the epoch metrics the run itself recorded, so they need no particular logger, or none.

Each picture is a function that returns a matplotlib `Figure` (`curves_figure`, `confusion_figure`,
`misclassified_figure`, `labelled_grid_figure`), so what it shows can be checked, and `save_figure`
writes it. Figures are made with `matplotlib.figure.Figure`, not pyplot: no display, no global state.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid

from mnist_dense.calibration import BINS, bin_sums, error_of, reliability_figure
from mnist_dense.constants import NUM_CLASSES

CURVES = (("loss", "Loss (cross-entropy)"), ("acc", "Accuracy"))
STAGES = (("train", "training", "o-"), ("val", "validation", "s--"))
GRID_COLUMNS = 12
GRID_PADDING = 2
GRID_PAD_VALUE = 0.5


def save_figure(fig: Figure, path: Path) -> Path:
    """Write a figure as a PNG at 100 dpi (its folder is made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def publish(trainer: L.Trainer, fig: Figure, path: Path) -> Path:
    """Save a picture as a PNG and add it to the run's TensorBoard loggers (tag: the file's stem) and MLflow loggers."""
    save_figure(fig, path)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(path.stem, fig, global_step=trainer.global_step, close=False)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_figure(logger.run_id, fig, path.name)  # an artifact of the run, as its file is named
    return path


def curves_figure(epochs: list[dict[str, float]]) -> Figure:
    """Loss and accuracy against epoch, one line per stage that logged them.

    `epochs` holds one row per epoch: {"epoch": 1, "train_loss": ..., "val_acc": ...}; a missing value is a gap.
    """
    fig = Figure(figsize=(10, 4), layout="tight")
    numbers = [row["epoch"] for row in epochs]
    for ax, (metric, title) in zip(fig.subplots(1, len(CURVES)), CURVES, strict=True):
        for stage, label, style in STAGES:
            values = [row.get(f"{stage}_{metric}", float("nan")) for row in epochs]
            if any(v == v for v in values):  # at least one logged (not NaN)
                ax.plot(numbers, values, style, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_xticks(numbers)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_figure(matrix: Tensor) -> Figure:
    """torchmetrics' `MulticlassConfusionMatrix.plot()` of the counts: rows true digit, columns predicted."""
    fig = Figure(figsize=(7, 7), layout="constrained")
    classes = len(matrix)
    MulticlassConfusionMatrix(num_classes=classes).plot(
        val=matrix, ax=fig.subplots(), labels=[str(k) for k in range(classes)]
    )
    return fig


def labelled_grid_figure(
    images: Tensor, titles: list[str], *, columns: int, inches: float = 0.85, title: str | None = None
) -> Figure:
    """One torchvision `make_grid` picture of images (N, 1, H, W) in [0, 1], each cell titled in its top-left corner."""
    columns = min(columns, max(len(images), 1))
    rows = -(-len(images) // columns)
    grid = make_grid(images, nrow=columns, padding=GRID_PADDING, pad_value=GRID_PAD_VALUE)
    fig = Figure(figsize=(columns * inches + 0.2, rows * inches + (0.5 if title else 0.2)), layout="tight")
    ax = fig.subplots()
    ax.imshow(grid.permute(1, 2, 0).numpy(), vmin=0, vmax=1)
    cell_height, cell_width = (size + GRID_PADDING for size in images.shape[-2:])
    for i, text in enumerate(titles):
        row, column = divmod(i, columns)
        x, y = column * cell_width + GRID_PADDING + 1, row * cell_height + GRID_PADDING + 1
        ax.text(x, y, text, color="yellow", fontsize=7, va="top", ha="left")
    if title:
        ax.set_title(title)
    ax.axis("off")
    return fig


def misclassified_figure(images: Tensor, titles: list[str]) -> Figure:
    """Model inputs (N, 28, 28) or (N, 1, 28, 28), any normalization, titled "true->predicted".

    The inputs are scaled together to the grid's [0, 1] (background -> 0, the brightest ink -> 1).
    """
    images = images.float().reshape(len(images), 1, *images.shape[-2:])
    scaled = (images - images.min()) / (images.max() - images.min()).clamp_min(1e-8)
    return labelled_grid_figure(
        scaled, titles, columns=GRID_COLUMNS, title="Misclassified test digits: true -> predicted"
    )


class RunPlots(L.Callback):
    """Training curves after fit; confusion matrix and misclassified digits after test.

    Works with any LightningModule whose forward maps a batch's images to class logits, and batches
    `(images, labels)`.

    Args:
        enabled: Write the pictures (false: skip them all).
        max_misclassified: How many misclassified test digits the grid shows at most.
    """

    def __init__(self, enabled: bool = True, max_misclassified: int = 60) -> None:
        self.enabled, self.max_misclassified = enabled, max_misclassified
        self.epochs: dict[int, dict[str, float]] = {}  # epoch number (from 1) -> its logged train_* and val_*
        self._training_epoch: int | None = None
        self.confusion = MulticlassConfusionMatrix(num_classes=NUM_CLASSES)
        self.wrong_images: list[Tensor] = []
        self.wrong_titles: list[str] = []
        self.calibration = torch.zeros(BINS, 3, dtype=torch.float64)  # `bin_sums` of the test so far

    def _folder(self, trainer: L.Trainer) -> Path:
        """Call on every rank: under DDP `trainer.log_dir` is a broadcast, so rank 0 alone would hang."""
        return Path(trainer.log_dir or trainer.default_root_dir)

    # ----- fit: the logged epoch metrics, per epoch -----
    # Lightning calls a callback's on_train_epoch_end *before* the module's, where the module logs its
    # training metrics; so an epoch's train_* are read once it is over: as the next one starts, or as fit ends.

    def _note(self, trainer: L.Trainer, stage: str, epoch: int) -> None:
        row = self.epochs.setdefault(epoch + 1, {"epoch": epoch + 1})
        for name, value in trainer.callback_metrics.items():
            if name.split("_")[0] == stage:
                row[name] = float(value)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs, self._training_epoch = {}, None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._training_epoch is not None:
            self._note(trainer, "train", self._training_epoch)
        self._training_epoch = trainer.current_epoch

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._note(trainer, "val", trainer.current_epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._training_epoch is not None:
            self._note(trainer, "train", self._training_epoch)
            self._training_epoch = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = self._folder(trainer)
        if self.enabled and self.epochs and trainer.is_global_zero:
            path = publish(trainer, curves_figure(self.curve_rows()), folder / "training_curves.png")
            print(f"Training curves: {path}")

    def curve_rows(self) -> list[dict[str, float]]:
        return [self.epochs[epoch] for epoch in sorted(self.epochs)]

    # ----- test: predictions gathered batch by batch -----

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.confusion = self.confusion.to(pl_module.device)
        self.confusion.reset()
        self.wrong_images, self.wrong_titles = [], []
        self.calibration = torch.zeros(BINS, 3, dtype=torch.float64, device=pl_module.device)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.enabled:
            return
        images, targets = batch
        with torch.no_grad():
            logits = pl_module(images)  # one extra forward of a small network: cheap
            probabilities = (logits / getattr(pl_module, "temperature", 1.0)).softmax(dim=1)  # calibrated, if fitted
        predicted = probabilities.argmax(dim=1)
        self.confusion.update(predicted, targets)
        self.calibration += bin_sums(probabilities, targets)
        room = self.max_misclassified - len(self.wrong_titles)
        if room > 0:
            wrong = (predicted != targets).nonzero().flatten()[:room]
            self.wrong_images.append(images[wrong].detach().cpu())
            pairs = zip(targets[wrong].tolist(), predicted[wrong].tolist(), strict=True)
            self.wrong_titles += [f"{true}->{guess}" for true, guess in pairs]

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        matrix = self.confusion.compute().cpu()  # summed over ranks under DDP
        sums = trainer.strategy.reduce(self.calibration.clone(), reduce_op="sum").cpu()  # every rank's share
        folder = self._folder(trainer)
        if trainer.is_global_zero:
            self._save_test_pictures(trainer, folder, matrix)
            if sums[:, 0].sum() > 0:
                path = publish(trainer, reliability_figure(sums), folder / "reliability.png")
                ece = 100 * error_of(sums)
                print(f"Reliability diagram: {path} (expected calibration error {ece:.2f}% over {BINS} bins)")

    def _save_test_pictures(self, trainer: L.Trainer, folder: Path, matrix: Tensor) -> None:
        png = publish(trainer, confusion_figure(matrix), folder / "confusion_matrix.png")
        table = folder / "confusion_matrix.csv"
        with open(table, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true\\predicted", *range(len(matrix))])
            for label, row in enumerate(matrix.tolist()):
                writer.writerow([label, *row])
        total, correct = int(matrix.sum()), int(matrix.diagonal().sum())
        print(f"Confusion matrix: {png}, {table} ({correct:,} of {total:,} right)")
        if self.wrong_titles:
            figure = misclassified_figure(torch.cat(self.wrong_images), self.wrong_titles)
            path = publish(trainer, figure, folder / "misclassified.png")
            print(f"Misclassified digits: {path} (the first {len(self.wrong_titles)} of {total - correct:,})")
