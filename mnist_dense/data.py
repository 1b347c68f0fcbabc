"""MNIST as in-memory tensors, served in batches taken by index.

The four IDX files are checked (size, magic number, labels, md5) before anything trains, decoded
once with torchvision's reader, and held as uint8 tensors. Batches are slices of those tensors, so
an epoch costs no per-sample Python work; scaling to floats happens after the batch reaches its
device, in `on_after_batch_transfer`, identically for train, val, test and predict.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt, restricted_number_type
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_dense.constants import IMAGE_SIZE, MNIST_MEAN, MNIST_STD, NUM_CLASSES, TRAIN_COUNT
from mnist_dense.translate import translate_batch

# The validation split has its own seed so that runs with different training seeds validate on
# the same images.
VAL_SPLIT_SEED = 20_150_226
DOWNLOAD_TIMEOUT_S = 30.0
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
HEADER_BYTES = {IMAGE_MAGIC: 16, LABEL_MAGIC: 8}

Normalization = Literal["unit", "standard"]
ValSize = restricted_number_type("ValSize", int, [(">=", 0), ("<", TRAIN_COUNT)])


@dataclass(frozen=True)
class MNISTFile:
    name: str
    magic: int
    count: int
    md5: str

    @property
    def size(self) -> int:
        item = IMAGE_SIZE * IMAGE_SIZE if self.magic == IMAGE_MAGIC else 1
        return HEADER_BYTES[self.magic] + self.count * item


# The original MNIST files, uncompressed (md5 sums from shared/data/mnist/README.md).
MNIST_FILES = {
    ("train", "images"): MNISTFile("train-images-idx3-ubyte", IMAGE_MAGIC, 60_000, "6bbc9ace898e44ae57da46a324031adb"),
    ("train", "labels"): MNISTFile("train-labels-idx1-ubyte", LABEL_MAGIC, 60_000, "a25bea736e30d166cdddb491f175f624"),
    ("test", "images"): MNISTFile("t10k-images-idx3-ubyte", IMAGE_MAGIC, 10_000, "2646ac647ad5339dbf082846283269ea"),
    ("test", "labels"): MNISTFile("t10k-labels-idx1-ubyte", LABEL_MAGIC, 10_000, "27ae3e4e09519cfbb04c329615203637"),
}


class MNISTDataError(RuntimeError):
    """A problem with the MNIST files on disk; the message names the file and the fix."""


def raw_folder(data_dir: str | Path) -> Path:
    """Where torchvision's MNIST keeps its files: `<data_dir>/MNIST/raw`."""
    return Path(data_dir).expanduser().resolve() / "MNIST" / "raw"


def _how_to_fix(folder: Path) -> str:
    names = ", ".join(f"{f.name}.gz" for f in MNIST_FILES.values())
    return (
        f"Put the four MNIST files ({names}, gzip or uncompressed) in {folder}, for example by copying"
        " data/MNIST/raw/ from a clone of this repository, or point --data.data_dir at a folder"
        " whose MNIST/raw holds them."
    )


def ensure_mnist_files(data_dir: str | Path) -> Path:
    """Make the four uncompressed files exist: keep them, else un-gzip, else download (bounded)."""
    folder = raw_folder(data_dir)
    missing = [f for f in MNIST_FILES.values() if not (folder / f.name).exists()]
    for spec in list(missing):
        packed = folder / f"{spec.name}.gz"
        if packed.exists():
            _gunzip(packed, folder / spec.name)
            missing.remove(spec)
    if missing:
        _download(folder, missing)
    return folder


def _gunzip(packed: Path, target: Path) -> None:
    partial = target.with_name(f".{target.name}.partial")
    try:
        with gzip.open(packed, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        os.replace(partial, target)
    except PermissionError as err:
        raise MNISTDataError(
            f"Cannot write the decompressed {target.name} into {target.parent} ({err.strerror}). Make that"
            f" folder writable, decompress it yourself with `gunzip -k {packed}`, or point"
            " --data.data_dir at a writable copy of the data folder."
        ) from err
    except (OSError, EOFError) as err:
        partial.unlink(missing_ok=True)
        raise MNISTDataError(
            f"{packed} is not a readable gzip file ({err}). Replace it with the original from"
            f" data/MNIST/raw/ of this repository. {_how_to_fix(packed.parent)}"
        ) from err


def _download(folder: Path, missing: list[MNISTFile]) -> None:
    names = ", ".join(f.name for f in missing)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torchvision's download has no timeout of its own
    try:
        MNIST(str(folder.parent.parent), train=True, download=True)
    except Exception as err:  # any failure of the mirrors ends in one clear message
        raise MNISTDataError(
            f"MNIST files missing from {folder}: {names}. Downloading them failed ({type(err).__name__}:"
            f" {str(err).splitlines()[0] if str(err) else 'no detail'}). {_how_to_fix(folder)}"
        ) from err
    finally:
        socket.setdefaulttimeout(previous)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_file(path: Path, spec: MNISTFile) -> None:
    """Refuse a truncated, empty, swapped or altered file before torchvision's reader sees it."""
    fix = f"Replace it with the original {spec.name}.gz from data/MNIST/raw/ of this repository (and delete {path})."
    size = path.stat().st_size
    if size < 4:
        raise MNISTDataError(f"{path} is {'empty' if size == 0 else 'truncated'} ({size} bytes). {fix}")
    with open(path, "rb") as f:
        magic = int.from_bytes(f.read(4), "big")
    if magic != spec.magic:
        kinds = {IMAGE_MAGIC: "images", LABEL_MAGIC: "labels"}
        found = f"a file of {kinds[magic]}" if magic in kinds else "not an MNIST IDX file"
        raise MNISTDataError(
            f"{path} has magic number {magic}, expected {spec.magic}: it is {found}, not"
            f" {kinds[spec.magic]} (were two files swapped?). {fix}"
        )
    if size != spec.size:
        raise MNISTDataError(
            f"{path} is {size:,} bytes, expected {spec.size:,} ({spec.count:,} items): the file is"
            f" {'truncated' if size < spec.size else 'too long'}. {fix}"
        )


def load_split(data_dir: str | Path, split: Literal["train", "test"]) -> tuple[Tensor, Tensor]:
    """Check and decode one split: uint8 images (N, 28, 28) and int64 labels (N,)."""
    folder = ensure_mnist_files(data_dir)
    image_spec, label_spec = MNIST_FILES[(split, "images")], MNIST_FILES[(split, "labels")]
    image_path, label_path = folder / image_spec.name, folder / label_spec.name
    for path, spec in ((image_path, image_spec), (label_path, label_spec)):
        _check_file(path, spec)
    images, labels = read_image_file(str(image_path)), read_label_file(str(label_path))
    if tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise MNISTDataError(f"{image_path} holds {tuple(images.shape[1:])} images, expected 28x28.")
    bad = (labels < 0) | (labels >= NUM_CLASSES)
    if bad.any():
        first = int(bad.nonzero()[0])
        raise MNISTDataError(
            f"{label_path} has {int(bad.sum())} labels outside 0-9 (the first at index {first}: {int(labels[first])})."
            f" Replace it with the original {label_spec.name}.gz from data/MNIST/raw/ of this repository."
        )
    for path, spec in ((image_path, image_spec), (label_path, label_spec)):
        if _md5(path) != spec.md5:
            raise MNISTDataError(
                f"{path} has the right size but not the original MNIST bytes (md5 differs from {spec.md5})."
                f" Replace it with the original {spec.name}.gz from data/MNIST/raw/ of this repository"
                f" and delete {path}."
            )
    return images, labels


def to_model_input(images: Tensor, normalization: Normalization = "unit") -> Tensor:
    """uint8 pixels 0-255 -> float inputs: [0, 1] as in the tutorial, or standardized."""
    x = images.float().div_(255.0)
    if normalization == "standard":
        x = x.sub_(MNIST_MEAN).div_(MNIST_STD)
    return x


def split_indices(count: int, val_size: int) -> tuple[Tensor, Tensor]:
    """Sorted (train, val) indices of the training images; the split's own seed keeps it the same for every run."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    return order[val_size:].sort().values, order[:val_size].sort().values


def epoch_order(length: int, seed: int, epoch: int) -> Tensor:
    """The shuffle of one epoch: it depends only on the run's seed and the epoch, so a resumed run repeats it."""
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def run_seed() -> int:
    """The run's seed, as `seed_everything` (and so `--seed_everything`) records it; 0 when unseeded."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class IndexBatches(DistributedSampler):
    """Yields index tensors for whole batches; each epoch's order depends only on (seed, epoch).

    It is a `DistributedSampler` so that Lightning keeps it under DDP instead of replacing it: each
    rank takes its own disjoint share of the epoch's order, padded so every rank runs the same number
    of steps. With `group` set, it yields lists of up to `group` batches: one Lightning training step
    then makes that many optimizer steps (Keras' `steps_per_execution`).
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        group: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        self.length, self.batch_size, self.shuffle, self.seed = length, batch_size, shuffle, seed
        self.group, self.rank, self.num_replicas, self.device = group, rank, world_size, torch.device(device)
        self.epoch = 0
        self.skip = 0  # Lightning steps already done this epoch (set on a mid-epoch resume); used once
        per_rank = math.ceil(length / world_size) if shuffle else len(range(rank, length, world_size))
        self.num_batches = math.ceil(per_rank / batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_batches / self.group) if self.group else self.num_batches

    def _order(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.rank, self.length, self.num_replicas)
        order = epoch_order(self.length, self.seed, self.epoch)
        padded = math.ceil(self.length / self.num_replicas) * self.num_replicas
        order = torch.cat([order, order[: padded - self.length]])
        return order[self.rank :: self.num_replicas]

    def __iter__(self):
        skip, self.skip = self.skip, 0
        batches = self._order().to(self.device).split(self.batch_size)
        if not self.group:
            yield from batches[skip:]
            return
        for start in range(skip * self.group, len(batches), self.group):
            yield list(batches[start : start + self.group])


class IndexedTensors(Dataset):
    """Images and labels indexed by a whole batch (or a list of batches) at once."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: Tensor | list[Tensor]) -> tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]:
        if isinstance(index, list):
            return [(self.images[i], self.labels[i]) for i in index]
        return self.images[index], self.labels[index]


class MNISTDataModule(L.LightningDataModule):
    """MNIST from `<data_dir>/MNIST/raw`, checked, held in memory, normalized on the device.

    Args:
        data_dir: Folder holding MNIST/raw with the four IDX files (gzip or not).
        batch_size: Training batch size; 32 is Keras' default, as in the tutorial.
        val_size: Training images held out for validation (seeded split); 0 trains on all 60,000 as the tutorial does.
        num_workers: DataLoader worker processes; 0 is fastest since the data is already in memory.
        normalization: "unit" divides pixels by 255 as the tutorial does; "standard" then subtracts
            the MNIST mean and divides by its std.
        steps_per_execution: Optimizer steps per Lightning training step (Keras' name); more cut the
            Trainer's per-step overhead without changing what is computed.
        eval_batch_size: Batch size for validation, test and predict; it does not change their results.
        max_translate: Shift each training digit by a random 0 to this many pixels along each axis (0: the tutorial,
            no shifts); it teaches the network off-centre digits. Validation, test and predict are never shifted.
        predict_images: For `predict`: a folder or glob of your own PNG/JPEG digit pictures, prepared as MNIST's
            digits were (see `own_images`); unset predicts the test set.
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: PositiveInt = 32,
        val_size: ValSize = 5000,
        num_workers: NonNegativeInt = 0,
        normalization: Normalization = "unit",
        steps_per_execution: PositiveInt = 16,
        eval_batch_size: PositiveInt = 1000,
        max_translate: NonNegativeInt = 0,
        predict_images: str | None = None,
    ) -> None:
        super().__init__()
        for name, kind, value in (
            ("batch_size", PositiveInt, batch_size),
            ("val_size", ValSize, val_size),
            ("num_workers", NonNegativeInt, num_workers),
            ("steps_per_execution", PositiveInt, steps_per_execution),
            ("eval_batch_size", PositiveInt, eval_batch_size),
            ("max_translate", NonNegativeInt, max_translate),
        ):
            try:
                kind(value)
            except (TypeError, ValueError) as err:
                raise ValueError(f"MNISTDataModule({name}={value!r}): {err}") from None
        if normalization not in ("unit", "standard"):
            raise ValueError(f"MNISTDataModule(normalization={normalization!r}): use 'unit' or 'standard'.")
        self.save_hyperparameters()
        self.data_dir, self.batch_size, self.val_size, self.num_workers = data_dir, batch_size, val_size, num_workers
        self.normalization, self.steps_per_execution, self.eval_batch_size = (
            normalization,
            steps_per_execution,
            eval_batch_size,
        )
        self.max_translate, self.predict_images, self.own_images = max_translate, predict_images, None
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}

    def prepare_data(self) -> None:
        ensure_mnist_files(self.data_dir)  # un-gzip or download once per node, before setup on every rank

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train_images, train_labels = load_split(self.data_dir, "train")
        if self.val_size >= len(train_labels):
            raise ValueError(f"val_size={self.val_size} leaves no training images out of {len(train_labels):,}.")
        train_index, val_index = split_indices(len(train_labels), self.val_size)
        self.splits["train"] = train_images[train_index], train_labels[train_index]
        self.splits["val"] = train_images[val_index], train_labels[val_index]
        self.splits["test"] = load_split(self.data_dir, "test")
        device = self._device()
        self.on_device = {name: (x.to(device), y.to(device)) for name, (x, y) in self.splits.items()}

    def _device(self) -> torch.device:
        """The uint8 data moves to the accelerator once; batches are then sliced where they are used."""
        trainer = self.trainer
        if trainer is None or trainer.strategy.root_device.type == "cpu" or self.num_workers:
            return torch.device("cpu")
        return trainer.strategy.root_device

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        images, labels = self.on_device[split]
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        sampler = IndexBatches(
            len(labels),
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            seed=run_seed(),
            # Several backward passes inside one DDP forward are not allowed: one step a batch there.
            group=(self.steps_per_execution if world_size == 1 else 1) if train else None,
            rank=rank,
            world_size=world_size,
            device=images.device,
        )
        return DataLoader(
            IndexedTensors(images, labels),
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False) if self.val_size else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_images:
            from mnist_dense.pictures import load_own_images  # imports torchvision.io only when needed

            self.own_images = load_own_images(self.predict_images)
            unknown = torch.full((len(self.own_images.images),), -1, dtype=torch.long)
            return DataLoader(TensorDataset(self.own_images.images, unknown), batch_size=self.eval_batch_size)
        return DataLoader(TensorDataset(*self.splits["test"]), batch_size=self.eval_batch_size)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Scale uint8 pixels to model inputs on the batch's own device (training digits shifted first, if asked)."""
        if self.max_translate and self.trainer is not None and self.trainer.training:
            batch = translate_batch(batch, self.max_translate)
        if isinstance(batch[0], Tensor):
            images, labels = batch
            return to_model_input(images, self.normalization), labels
        return [(to_model_input(images, self.normalization), labels) for images, labels in batch]
