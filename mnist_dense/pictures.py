"""Your own digit pictures, made to look like MNIST digits, for `predict --data.predict_images`.

MNIST's digits were made this way (LeCun et al.): white ink on black, the ink's bounding box scaled
to fit 20x20 keeping its aspect, then placed in 28x28 so that its centre of mass is the centre. A
dense network only knows digits made like that, so a photo or a drawing gets the same treatment:
grayscale, inverted when dark on light, contrast stretched, cropped to the ink, scaled, centred.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from mnist_dense.constants import IMAGE_SIZE
from mnist_dense.translate import shift_images

DIGIT_BOX = 20  # MNIST scales the ink to fit 20x20 inside 28x28
INK_LEVEL = 0.2  # after contrast stretching, pixels above this fraction of full ink count as ink


class OwnImagesError(ValueError):
    """`--data.predict_images` names no files; the message says what was looked at and the fix."""


@dataclass
class OwnImages:
    """Prepared digits (N, 28, 28) uint8 with their file names, and the files that could not be used."""

    images: Tensor
    names: list[str]
    failures: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # every file, sorted: the rows of predictions.csv


def find_files(pattern: str) -> list[Path]:
    """A folder (every file in it) or a glob pattern; hidden files are skipped."""
    folder = Path(pattern).expanduser()
    if folder.is_dir():
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        where = f"the folder {folder}"
    else:
        files = [Path(p) for p in glob.glob(str(folder), recursive=True) if Path(p).is_file()]
        where = f"the pattern {pattern!r}"
    if not files:
        raise OwnImagesError(
            f"--data.predict_images: {where} matches no files. Name a folder holding PNG or JPEG digit"
            " images, or a glob such as 'my_digits/*.png' (quote it so the shell does not expand it)."
        )
    return sorted(files)


def prepare_digit(image: Tensor) -> Tensor:
    """A grayscale uint8 picture (1, H, W) or (H, W) of one digit -> an MNIST-like uint8 (28, 28)."""
    x = image.reshape(image.shape[-2:]).float()
    border = torch.cat([x[0], x[-1], x[:, 0], x[:, -1]])
    if border.median() > 127:  # dark ink on light paper: MNIST is light ink on black
        x, border = 255 - x, 255 - border
    x = (x - border.median()).clamp_min(0)
    if x.max() <= 0:
        raise ValueError("no ink found: the picture is one flat colour")
    x = x / x.max()
    ink = x > INK_LEVEL
    rows, cols = ink.any(dim=1).nonzero().flatten(), ink.any(dim=0).nonzero().flatten()
    x = x[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = x.shape
    scale = DIGIT_BOX / max(height, width)
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    x = TF.resize(x[None], size, antialias=True)[0].clamp(0, 1)
    canvas = torch.zeros(IMAGE_SIZE, IMAGE_SIZE)
    top, left = (IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2
    canvas[top : top + size[0], left : left + size[1]] = x
    digit = (canvas * 255).round().to(torch.uint8)
    return center_by_mass(digit)


def center_by_mass(digit: Tensor) -> Tensor:
    """Shift a (28, 28) digit by whole pixels so that its centre of mass is the image centre."""
    mass = digit.float()
    coords = torch.arange(IMAGE_SIZE, dtype=torch.float)
    row = (mass.sum(dim=1) * coords).sum() / mass.sum()
    col = (mass.sum(dim=0) * coords).sum() / mass.sum()
    centre = (IMAGE_SIZE - 1) / 2
    return shift_images(digit[None], round(float(centre - row)), round(float(centre - col)))[0]


def load_own_images(pattern: str) -> OwnImages:
    """Read and prepare every file; one that is not a readable digit picture is kept as a failure."""
    files = find_files(pattern)
    images, names, failures = [], [], {}
    for path in files:
        try:
            picture = decode_image(str(path), mode=ImageReadMode.GRAY)
        except (RuntimeError, OSError):
            failures[str(path)] = "not a readable image (use PNG or JPEG)"
            continue
        try:
            images.append(prepare_digit(picture))
            names.append(str(path))
        except ValueError as err:
            failures[str(path)] = str(err)
    stacked = torch.stack(images) if images else torch.zeros(0, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    return OwnImages(stacked, names, failures, [str(p) for p in files])
