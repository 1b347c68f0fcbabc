"""Pixels 0-255 -> model inputs: the one place the tutorial's `x / 255` (and the optional standardization) lives.

Training batches, test batches, your own pictures, `show`, `shift` and the exported ONNX graph all call
`to_model_input`, so every path feeds the network the same numbers.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from mnist_dense.constants import IMAGE_SIZE, MNIST_MEAN, MNIST_STD

Normalization = Literal["unit", "standard"]
NORMALIZATIONS: tuple[str, ...] = ("unit", "standard")


def to_model_input(images: Tensor, normalization: Normalization = "unit") -> Tensor:
    """uint8 (or float) pixels 0-255, (N, 28, 28) or (N, 1, 28, 28) -> float (N, 1, 28, 28).

    "unit" divides by 255 as the tutorial does; "standard" then subtracts the MNIST mean and divides by its
    std. No in-place operation: the exported graph traces this function as it is.
    """
    x = images.float().reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE) / 255.0
    if normalization == "standard":
        x = (x - MNIST_MEAN) / MNIST_STD
    return x
