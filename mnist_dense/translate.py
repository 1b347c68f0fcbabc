"""Shifting whole batches of digits by whole pixels, as tensor indexing on the batch's own device.

MNIST digits are centred by their centre of mass, and a dense network learns them only there. Two
uses: `random_translate` augments training batches (`--data.max_translate K`), and `shift_images`
moves every test digit by the same offset to measure the weakness (`python -m mnist_dense.shift`).
Pixels shifted in from outside are 0 (background), so shift before normalizing. The largest shift is
always known on the host, so nothing here waits for the device.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

# The eight directions (rows down, columns right) that `python -m mnist_dense.shift` averages over.
DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def translate(images: Tensor, offsets: Tensor, margin: int) -> Tensor:
    """Shift each image (N, H, W) by its own (rows, columns) in `offsets` (N, 2), all within +-margin; 0s fill in."""
    if len(images) == 0 or margin == 0:
        return images.clone()
    height, width = images.shape[-2:]
    padded = F.pad(images, (margin, margin, margin, margin))
    offsets = offsets.to(images.device)
    rows = margin - offsets[:, :1] + torch.arange(height, device=images.device)  # (N, H)
    cols = margin - offsets[:, 1:] + torch.arange(width, device=images.device)  # (N, W)
    index = torch.arange(len(images), device=images.device)[:, None, None]
    return padded[index, rows[:, :, None], cols[:, None, :]]


def shift_images(images: Tensor, rows: int, cols: int) -> Tensor:
    """Shift every image by the same (rows, columns): positive is down and right."""
    offsets = torch.tensor([rows, cols]).expand(len(images), 2)
    return translate(images, offsets, max(abs(rows), abs(cols)))


def random_translate(images: Tensor, max_shift: int) -> Tensor:
    """Shift each image by its own random offset of up to `max_shift` pixels along each axis."""
    if max_shift <= 0:
        return images
    offsets = torch.randint(-max_shift, max_shift + 1, (len(images), 2), device=images.device)
    return translate(images, offsets, max_shift)
