"""`python -m mnist_dense.show --index N`: the tutorial's first look at its data, as files.

Prints training image N's label and its 28x28 pixels twice, raw (0-255) and as the model sees them
after normalization, saves the digit as a PNG, and saves a grid of the first training digits with
their labels (torchvision's `make_grid`). Nothing needs a display: matplotlib draws off-screen.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.io import write_jpeg
from torchvision.transforms.v2 import functional as TF

from mnist_dense.callbacks.plots import labelled_grid_figure, save_figure
from mnist_dense.data import MNISTDataError, load_split
from mnist_dense.data.files import default_data_dir
from mnist_dense.scaling import NORMALIZATIONS, to_model_input

GRID_COLUMNS = 10


def format_pixels(pixels: Tensor, *, decimals: int = 0) -> str:
    """A 28x28 array as aligned text rows, integers for raw bytes, fixed decimals for model inputs."""
    cells = [[f"{v:.{decimals}f}" if decimals else str(int(v)) for v in row] for row in pixels.tolist()]
    width = max(len(c) for row in cells for c in row)
    return "\n".join(" ".join(c.rjust(width) for c in row) for row in cells)


def digit_figure(image: Tensor, index: int, label: int) -> Figure:
    """Training image `index`, uint8 (28, 28), in gray 0-255 with a colour bar; its label in the title."""
    fig = Figure(figsize=(3, 3), layout="tight")
    ax = fig.subplots()
    shown = ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=255)
    fig.colorbar(shown, ax=ax)
    ax.set_title(f"training image {index}: label {label}", fontsize=9)
    return fig


def grid_figure(images: Tensor, labels: Tensor) -> Figure:
    """uint8 digits (N, 28, 28) as one `make_grid` picture, each cell labelled in its top-left corner."""
    titles = [str(label) for label in labels.tolist()]
    return labelled_grid_figure(images[:, None].float() / 255, titles, columns=GRID_COLUMNS, inches=0.8)


PAPER_SHADE, INK_SHADE, DRAWN_SIZE = 235, 20, 112


def draw_on_paper(digit: Tensor, index: int) -> Tensor:
    """An MNIST digit as a user's photo or scan would show it: 4x larger, dark ink on light paper, off centre.

    The place on the 240x200 page moves with `index`, so a set of drawings is not all centred alike.
    """
    big = TF.resize(digit[None], [DRAWN_SIZE, DRAWN_SIZE], antialias=True)
    page = torch.full((1, 200, 240), PAPER_SHADE, dtype=torch.uint8)
    top, left = 10 + index % 70, 120 - 2 * (index % 60)
    ink = (big.float() * (PAPER_SHADE - INK_SHADE) / 255).round().to(torch.uint8)
    page[:, top : top + DRAWN_SIZE, left : left + DRAWN_SIZE] = PAPER_SHADE - ink
    return page


def save_paper_digits(data_dir: str | Path, count: int, folder: Path) -> int:
    """The first `count` test digits drawn on paper as JPEG files named with their true label; returns how many."""
    images, labels = load_split(data_dir, "test")
    count = min(count, len(labels))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_jpeg(draw_on_paper(images[i], i), str(folder / f"test{i:05d}_label{int(labels[i])}.jpg"), quality=90)
    return count


def parse_args(args: list[str] | None) -> argparse.Namespace:
    """Options shared with `python -m mnist_dense` are spelled as there (`--data.data_dir`, `--data.normalization`)."""
    parser = argparse.ArgumentParser(
        prog="python -m mnist_dense.show", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument("--index", type=int, default=0, help="Training image to show (0-59,999).")
    parser.add_argument("--grid", type=int, default=25, help="How many of the first training digits the grid shows.")
    parser.add_argument("--out", type=Path, default=Path("runs/show"), help="Folder for the PNG files.")
    parser.add_argument(
        "--data.data_dir", dest="data_dir", default=default_data_dir(), help="Folder holding MNIST/raw."
    )
    parser.add_argument(
        "--data.normalization",
        dest="normalization",
        choices=NORMALIZATIONS,
        default="unit",
        help="How the printed model inputs are scaled: unit (x/255) or standard.",
    )
    parser.add_argument(
        "--on_paper",
        type=int,
        default=0,
        help="Also write the first N test digits drawn large, dark on light and off centre, as JPEG files in"
        " OUT/paper (inputs for `predict --data.predict_images`).",
    )
    options = parser.parse_args(args)
    if options.grid < 1:
        parser.error(f"--grid {options.grid}: show at least 1 digit.")
    if options.on_paper < 0:
        parser.error(f"--on_paper {options.on_paper}: give 0 (none) or more test digits to draw.")
    return options


def main(args: list[str] | None = None) -> None:
    options = parse_args(args)
    try:
        images, labels = load_split(options.data_dir, "train")
    except MNISTDataError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    if not 0 <= options.index < len(labels):
        print(
            f"error: --index {options.index} is outside the training set; use 0 to {len(labels) - 1}.", file=sys.stderr
        )
        raise SystemExit(2)
    image, label = images[options.index], int(labels[options.index])
    print(f"Training image {options.index}: label {label}")
    print("Pixels as stored (0-255):")
    print(format_pixels(image))
    print(f"Pixels as the model sees them (normalization {options.normalization}):")
    print(format_pixels(to_model_input(image, options.normalization)[0, 0], decimals=2))
    digit = save_figure(digit_figure(image, options.index, label), options.out / f"digit_{options.index}.png")
    count = min(options.grid, len(labels))
    grid = save_figure(grid_figure(images[:count], labels[:count]), options.out / "grid.png")
    print(f"Saved {digit}")
    print(f"Saved {grid} (the first {count} training digits with their labels)")
    if options.on_paper > 0:
        folder = options.out / "paper"
        count = save_paper_digits(options.data_dir, options.on_paper, folder)
        print(f"Saved {count} test digits drawn on paper in {folder}")


if __name__ == "__main__":
    main()
