"""Fixtures: small MNIST-format IDX files written by the tests, and the bundled MNIST."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_dense.data import files

REPO = Path(__file__).resolve().parents[1]
BUNDLED_DATA = REPO / "data"


def write_idx(path: Path, tensor: torch.Tensor, *, compress: bool = False) -> None:
    """Write a uint8 tensor as an IDX file (magic 0x0000080N, big-endian dimensions)."""
    header = (0x0800 + tensor.dim()).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in tensor.shape)
    payload = header + tensor.to(torch.uint8).numpy().tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def tiny_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable fake digits: label k lights up a 4-pixel-wide vertical bar at column 2 + 2k."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (count,), generator=generator)
    images = torch.randint(0, 40, (count, 28, 28), generator=generator)
    for k in range(10):
        images[labels == k, 4:24, 2 + 2 * k : 6 + 2 * k] = 255
    return images.to(torch.uint8), labels.to(torch.uint8)


@pytest.fixture
def tiny_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data_dir with 600 training and 200 test fake digits, gzip-compressed like the bundled ones.

    The expected counts and md5 sums are switched to those of these files, so every check stays real.
    """
    raw = tmp_path / "tiny" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    expected = {}
    for (split, kind), spec in files.MNIST_FILES.items():
        images, labels = tiny_digits(600 if split == "train" else 200, seed=0 if split == "train" else 1)
        tensor = images if kind == "images" else labels
        write_idx(raw / spec.name, tensor, compress=True)
        payload = gzip.decompress((raw / f"{spec.name}.gz").read_bytes())
        expected[(split, kind)] = files.MNISTFile(spec.name, spec.magic, len(tensor), hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(files, "MNIST_FILES", expected)
    return tmp_path / "tiny"


def cpu_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    """A quiet CPU Trainer that writes nothing unless a test asks for it."""
    defaults = dict(
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture
def one_thread():
    """One torch thread: on a busy shared CPU, OpenMP threads spinning for a core slow training 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_folder_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes from mnist_dense.data.files fail as in a read-only folder (chmod does not stop root, so refuse them)."""
    real_open = open

    def read_only_open(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", read_only_open, raising=False)
