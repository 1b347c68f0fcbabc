"""`python -m mnist_dense.shift --ckpt_path CKPT`: test accuracy on digits shifted off centre.

The tutorial ends by saying that a dense network only knows centred digits. This measures it: every
test digit is shifted by 0, 1, ..., N pixels in each of eight directions (up, down, left, right and
the diagonals; a diagonal shift of s moves s rows and s columns), and the accuracy per shift is the
mean over the directions. Prints a table, writes shift_accuracy.csv and shift_accuracy.png. Several
checkpoints (for instance without and with `--data.max_translate`) go side by side.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from mnist_dense.callbacks.plots import save_figure
from mnist_dense.checkpoints import CheckpointError, read_checkpoint, trained_eval_batch_size, trained_normalization
from mnist_dense.constants import NUM_CLASSES
from mnist_dense.data import MNISTDataError, MNISTDataModule, load_split
from mnist_dense.data.files import default_data_dir
from mnist_dense.module import MNISTClassifier
from mnist_dense.scaling import to_model_input
from mnist_dense.translate import DIRECTIONS, shift_images

# A checkpoint's input normalization and evaluation batch size (`--data.eval_batch_size` of its run).
Trained = tuple[str, int]
EVAL_BATCH_SIZE = inspect.signature(MNISTDataModule).parameters["eval_batch_size"].default


@torch.inference_mode()
def accuracy(
    model: MNISTClassifier, images: Tensor, labels: Tensor, normalization: str, batch_size: int = EVAL_BATCH_SIZE
) -> float:
    """Micro accuracy (as Keras and `test` count it) of uint8 images (N, 28, 28)."""
    metric = MulticlassAccuracy(num_classes=NUM_CLASSES, average="micro")
    for start in range(0, len(labels), batch_size):
        batch = to_model_input(images[start : start + batch_size], normalization)
        metric.update(model(batch), labels[start : start + batch_size])
    return float(metric.compute())


def shift_accuracies(
    model: MNISTClassifier,
    images: Tensor,
    labels: Tensor,
    normalization: str,
    max_shift: int,
    batch_size: int = EVAL_BATCH_SIZE,
) -> list[float]:
    """Accuracy at each shift 0..max_shift, averaged over the eight directions."""
    results = [accuracy(model, images, labels, normalization, batch_size)]
    for size in range(1, max_shift + 1):
        per_direction = [
            accuracy(model, shift_images(images, rows * size, cols * size), labels, normalization, batch_size)
            for rows, cols in DIRECTIONS
        ]
        results.append(sum(per_direction) / len(per_direction))
    return results


def load_checkpoint(path: Path) -> tuple[MNISTClassifier, Trained]:
    """The model, in eval mode on the CPU, the normalization it was trained with and its run's evaluation batch."""
    checkpoint = read_checkpoint(path)  # a missing or damaged file: one clear error naming it
    trained = trained_normalization(checkpoint, "unit"), trained_eval_batch_size(checkpoint, EVAL_BATCH_SIZE)
    return MNISTClassifier.load_from_checkpoint(path, map_location="cpu").eval(), trained


def shift_figure(table: dict[str, list[float]]) -> Figure:
    """Accuracy (%) against shift in pixels, one line per checkpoint: `table` maps a name to accuracies at 0..N."""
    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.subplots()
    for name, values in table.items():
        ax.plot(range(len(values)), [100 * v for v in values], "o-", label=name)
    ax.set_xticks(range(max(len(values) for values in table.values())))
    ax.set_xlabel("shift (pixels, mean of 8 directions)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy on shifted test digits")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def parse_args(args: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_dense.shift", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument("--ckpt_path", type=Path, nargs="+", required=True, help="One or more checkpoints.")
    parser.add_argument("--names", nargs="+", help="A column name per checkpoint (default: the paths).")
    parser.add_argument("--max_shift", type=int, default=4, help="Largest shift in pixels (0-14).")
    parser.add_argument("--out", type=Path, default=Path("runs/shift"), help="Folder for the CSV and PNG.")
    parser.add_argument(
        "--data.data_dir", dest="data_dir", default=default_data_dir(), help="Folder holding MNIST/raw."
    )
    options = parser.parse_args(args)
    if not 0 <= options.max_shift <= 14:
        parser.error(f"--max_shift {options.max_shift}: use 0 to 14 (a 28-pixel digit shifted 14 is half gone).")
    if options.names and len(options.names) != len(options.ckpt_path):
        parser.error(f"--names: {len(options.names)} names for {len(options.ckpt_path)} checkpoints.")
    return options


def main(args: list[str] | None = None) -> None:
    options = parse_args(args)
    names = options.names or [str(p) for p in options.ckpt_path]
    try:
        images, labels = load_split(options.data_dir, "test")
        models = [load_checkpoint(path) for path in options.ckpt_path]
    except (MNISTDataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    table = {
        name: shift_accuracies(model, images, labels, normalization, options.max_shift, batch_size)
        for name, (model, (normalization, batch_size)) in zip(names, models, strict=True)
    }
    print("shift  " + "  ".join(f"{name:>12}" for name in names))
    for size in range(options.max_shift + 1):
        print(f"{size:>5}  " + "  ".join(f"{100 * table[name][size]:>11.2f}%" for name in names))
    options.out.mkdir(parents=True, exist_ok=True)
    csv_path = options.out / "shift_accuracy.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["shift", *names])
        for size in range(options.max_shift + 1):
            writer.writerow([size, *(f"{table[name][size]:.6f}" for name in names)])
    print(f"Saved {csv_path}")
    print(f"Saved {save_figure(shift_figure(table), options.out / 'shift_accuracy.png')}")


if __name__ == "__main__":
    main()
