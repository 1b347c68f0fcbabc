"""`RunPlots`: the pictures of a run, written into its log folder and their paths printed.

After `fit`: training_curves.png (loss and accuracy per epoch, train and validation). After `test`:
confusion_matrix.png (torchmetrics' own confusion matrix and its `plot()`), its counts as
confusion_matrix.csv, and misclassified.png (test digits the model got wrong, true -> predicted).
Matplotlib draws off-screen (Agg), so no display is needed.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402
from torch import Tensor  # noqa: E402
from torchmetrics.classification import MulticlassConfusionMatrix  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from mnist_dense.constants import NUM_CLASSES  # noqa: E402

CURVES = (("loss", "Loss (cross-entropy)"), ("acc", "Accuracy"))
GRID_COLUMNS = 12
GRID_PADDING = 2


class RunPlots(L.Callback):
    """Training curves after fit; confusion matrix and misclassified digits after test.

    Args:
        enabled: Write the pictures (false: skip them all).
        max_misclassified: How many misclassified test digits the grid shows at most.
    """

    def __init__(self, enabled: bool = True, max_misclassified: int = 60) -> None:
        self.enabled, self.max_misclassified = enabled, max_misclassified
        self.epochs: list[dict[str, float]] = []
        self.confusion = MulticlassConfusionMatrix(num_classes=NUM_CLASSES)
        self.wrong_images: list[Tensor] = []
        self.wrong_titles: list[str] = []

    def _folder(self, trainer: L.Trainer) -> Path:
        """Call on every rank: under DDP `trainer.log_dir` is a broadcast, so rank 0 alone would hang."""
        return Path(trainer.log_dir or trainer.default_root_dir)

    # ----- fit: one row of logged epoch metrics per epoch -----

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row = {"epoch": trainer.current_epoch + 1}
        for name, value in trainer.callback_metrics.items():
            if name.split("_")[0] in ("train", "val"):
                row[name] = float(value)
        self.epochs.append(row)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = self._folder(trainer)
        if self.enabled and self.epochs and trainer.is_global_zero:
            path = self.save_curves(folder / "training_curves.png")
            print(f"Training curves: {path}")

    def save_curves(self, path: Path) -> Path:
        fig, axes = plt.subplots(1, len(CURVES), figsize=(10, 4))
        epochs = [row["epoch"] for row in self.epochs]
        for ax, (metric, title) in zip(axes, CURVES, strict=True):
            for stage, style in (("train", "o-"), ("val", "s--")):
                values = [row.get(f"{stage}_{metric}", float("nan")) for row in self.epochs]
                if any(v == v for v in values):  # at least one logged (not NaN)
                    ax.plot(epochs, values, style, label={"train": "training", "val": "validation"}[stage])
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.set_xticks(epochs)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    # ----- test: predictions gathered batch by batch -----

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.confusion = self.confusion.to(pl_module.device)
        self.confusion.reset()
        self.wrong_images, self.wrong_titles = [], []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.enabled:
            return
        images, targets = batch
        predicted = pl_module(images).argmax(dim=1)  # one extra forward of a small network: cheap
        self.confusion.update(predicted, targets)
        room = self.max_misclassified - len(self.wrong_titles)
        if room > 0:
            wrong = (predicted != targets).nonzero().flatten()[:room]
            self.wrong_images.append(images[wrong].detach().cpu())
            self.wrong_titles += [f"{int(targets[i])}->{int(predicted[i])}" for i in wrong]

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        matrix = self.confusion.compute().cpu()  # summed over ranks under DDP
        folder = self._folder(trainer)
        if trainer.is_global_zero:
            self._save_test_pictures(folder, matrix)

    @rank_zero_only
    def _save_test_pictures(self, folder: Path, matrix: Tensor) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        fig, _ = self.confusion.plot(val=matrix, labels=[str(k) for k in range(NUM_CLASSES)])
        fig.set_size_inches(7, 7)
        fig.savefig(folder / "confusion_matrix.png", dpi=100)
        plt.close(fig)
        with open(folder / "confusion_matrix.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true\\predicted", *range(NUM_CLASSES)])
            for label, row in enumerate(matrix.tolist()):
                writer.writerow([label, *row])
        total, correct = int(matrix.sum()), int(matrix.diagonal().sum())
        print(f"Confusion matrix: {folder / 'confusion_matrix.png'} ({correct:,} of {total:,} right)")
        if self.wrong_titles:
            path = save_misclassified(torch.cat(self.wrong_images), self.wrong_titles, folder / "misclassified.png")
            print(f"Misclassified digits: {path} (the first {len(self.wrong_titles)} of {total - correct:,})")


def save_misclassified(images: Tensor, titles: list[str], path: Path) -> Path:
    """A `make_grid` of model inputs (any normalization: scaled to the grid's range), titled true->predicted."""
    columns = min(GRID_COLUMNS, len(images))
    scaled = (images - images.min()) / (images.max() - images.min()).clamp_min(1e-8)  # background -> 0, ink -> 1
    grid = make_grid(
        scaled.reshape(len(images), 1, *images.shape[-2:]), nrow=columns, padding=GRID_PADDING, pad_value=0.5
    )
    rows = -(-len(images) // columns)
    fig, ax = plt.subplots(figsize=(columns * 0.85 + 0.2, rows * 0.85 + 0.5))
    ax.imshow(grid.permute(1, 2, 0).numpy())
    cell = images.shape[-1] + GRID_PADDING
    for i, title in enumerate(titles):
        row, column = divmod(i, columns)
        ax.text(
            column * cell + GRID_PADDING + 1, row * cell + GRID_PADDING + 1, title, color="yellow", fontsize=7, va="top"
        )
    ax.set_title("Misclassified test digits: true -> predicted")
    ax.axis("off")
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
