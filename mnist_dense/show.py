"""`python -m mnist_dense.show --index N`: the tutorial's first look at its data, as files.

Prints training image N's label and its 28x28 pixels twice, raw (0-255) and as the model sees them
after normalization, saves the digit as a PNG, and saves a grid of the first training digits with
their labels (torchvision's `make_grid`). Nothing needs a display: matplotlib draws off-screen.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from torchvision.io import write_jpeg  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from mnist_dense.data import MNISTDataError, load_split  # noqa: E402
from mnist_dense.scaling import to_model_input  # noqa: E402

GRID_COLUMNS = 10
GRID_PADDING = 2


def format_pixels(pixels: Tensor, *, decimals: int = 0) -> str:
    """A 28x28 array as aligned text rows, integers for raw bytes, fixed decimals for model inputs."""
    cells = [[f"{v:.{decimals}f}" if decimals else str(int(v)) for v in row] for row in pixels.tolist()]
    width = max(len(c) for row in cells for c in row)
    return "\n".join(" ".join(c.rjust(width) for c in row) for row in cells)


def digit_grid(images: Tensor, titles: list[str], path: Path, *, columns: int = GRID_COLUMNS) -> Path:
    """Save uint8 digits (N, 28, 28) as one `make_grid` picture, each cell labelled in its top-left corner."""
    columns = min(columns, max(len(images), 1))
    grid = make_grid(images[:, None].float() / 255, nrow=columns, padding=GRID_PADDING, pad_value=0.5)
    rows = -(-len(images) // columns)
    fig, ax = plt.subplots(figsize=(columns * 0.8 + 0.2, rows * 0.8 + 0.2))
    ax.imshow(grid.permute(1, 2, 0).numpy(), vmin=0, vmax=1)
    cell = images.shape[-1] + GRID_PADDING
    for i, title in enumerate(titles):
        row, column = divmod(i, columns)
        x, y = column * cell + GRID_PADDING + 1, row * cell + GRID_PADDING + 1
        ax.text(x, y, title, color="yellow", fontsize=8, va="top", ha="left")
    ax.axis("off")
    fig.tight_layout(pad=0.1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_digit(image: Tensor, label: int, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(3, 3))
    shown = ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=255)
    fig.colorbar(shown, ax=ax)
    ax.set_title(f"label {label}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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


def save_paper_digits(data_dir: str, count: int, folder: Path) -> Path:
    """The first `count` test digits drawn on paper as JPEG files named with their true label."""
    images, labels = load_split(data_dir, "test")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_jpeg(draw_on_paper(images[i], i), str(folder / f"test{i:05d}_label{int(labels[i])}.jpg"), quality=90)
    return folder


def parse_args(args: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mnist_dense.show", description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, default=0, help="Training image to show (0-59,999).")
    parser.add_argument("--grid", type=int, default=25, help="How many of the first training digits the grid shows.")
    parser.add_argument("--out", type=Path, default=Path("runs/show"), help="Folder for the PNG files.")
    parser.add_argument("--data_dir", default="data", help="Folder holding MNIST/raw (as --data.data_dir).")
    parser.add_argument(
        "--normalization", choices=("unit", "standard"), default="unit", help="As --data.normalization."
    )
    parser.add_argument(
        "--on_paper",
        type=int,
        default=0,
        help="Also write the first N test digits drawn large, dark on light and off centre, as JPEG files in"
        " OUT/paper (inputs for `predict --data.predict_images`).",
    )
    return parser.parse_args(args)


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
    if options.grid < 1:
        print(f"error: --grid {options.grid}: show at least 1 digit.", file=sys.stderr)
        raise SystemExit(2)
    image, label = images[options.index], int(labels[options.index])
    print(f"Training image {options.index}: label {label}")
    print("Pixels as stored (0-255):")
    print(format_pixels(image))
    print(f"Pixels as the model sees them (normalization {options.normalization}):")
    print(format_pixels(to_model_input(image, options.normalization)[0, 0], decimals=2))
    digit = save_digit(image, label, options.out / f"digit_{options.index}.png")
    count = min(options.grid, len(labels))
    grid = digit_grid(images[:count], [str(int(y)) for y in labels[:count]], options.out / "grid.png")
    print(f"Saved {digit}")
    print(f"Saved {grid} (the first {count} training digits with their labels)")
    if options.on_paper > 0:
        folder = save_paper_digits(options.data_dir, min(options.on_paper, 10_000), options.out / "paper")
        print(f"Saved {min(options.on_paper, 10_000)} test digits drawn on paper in {folder}")


if __name__ == "__main__":
    main()
