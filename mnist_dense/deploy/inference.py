"""The whole inference as one module: MNIST-like pixels 0-255 in, the tutorial's softmax out.

`export` writes exactly this module to ONNX or pt2 and `serve` runs it, so a program that loads the
exported file needs nothing else: the normalization the checkpoint was trained with is inside.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import NoReturn

import torch
from torch import Tensor, nn

from mnist_dense.calibration import energy, temperature_of, threshold_of
from mnist_dense.checkpoints import RUNS_DIR, read_checkpoint, resolve_last, trained_normalization
from mnist_dense.module import MNISTClassifier
from mnist_dense.scaling import Normalization, to_model_input

DEPLOY_EXTRA = 'pip install -e ".[deploy]"'


class DeployError(RuntimeError):
    """Export or serve cannot go on; the message names what is missing or wrong and the fix."""


class PixelsToProbabilities(nn.Module):
    """(N, 1, 28, 28) float pixels 0-255, white digit on black -> (N, 10) softmax probabilities."""

    def __init__(
        self, net: nn.Module, normalization: Normalization, temperature: float = 1.0, threshold: float | None = None
    ) -> None:
        super().__init__()
        self.net, self.normalization, self.temperature = net, normalization, temperature
        self.threshold = threshold  # `calibrate`'s "not a digit" threshold on the score, None without one

    def forward(self, images: Tensor) -> Tensor:
        return self.answer(images)[0]

    def answer(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The probabilities and the "not a digit" score (N,) (`calibration.energy`: above `threshold`, not a
        digit)."""
        logits = self.net(to_model_input(images, self.normalization))
        probabilities = torch.softmax(logits if self.temperature == 1.0 else logits / self.temperature, dim=1)
        return probabilities, energy(logits)


class WithScore(nn.Module):
    """What `export` writes: the probabilities and the "not a digit" score, two outputs."""

    def __init__(self, model: PixelsToProbabilities) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.answer(images)


def checkpoint_path(value: str) -> Path:
    """`--ckpt_path`: a file, or `last` for the newest last.ckpt/interrupted.ckpt under runs/."""
    return resolve_last(RUNS_DIR) if value == "last" else Path(value)


def load_inference_model(path: Path) -> PixelsToProbabilities:
    """The checkpoint's network with its training normalization and calibration (`calibrate`'s temperature, if
    fitted), in eval mode on the CPU, or `CheckpointError`."""
    checkpoint = read_checkpoint(path)
    normalization = trained_normalization(checkpoint, "unit")
    net = MNISTClassifier.load_from_checkpoint(path, map_location="cpu").net
    return PixelsToProbabilities(net, normalization, temperature_of(checkpoint), threshold_of(checkpoint)).eval()


def require_extra(command: str, modules: tuple[str, ...]) -> None:
    """Refuse with the install command when the `deploy` extra's packages are missing."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise DeployError(
            f"{command} needs {', '.join(missing)}, which come with this package's `deploy` extra:"
            f" {DEPLOY_EXTRA} (or `make install`, which installs it)."
        )


def fail(err: Exception) -> NoReturn:
    """The CLI's one-paragraph error on stderr and exit status 1, as `test` and `predict` give."""
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(1) from None
