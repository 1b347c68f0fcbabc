"""The four MNIST IDX files: found, un-gzipped, downloaded as a last resort, and checked before use.

torchvision's MNIST reader only checks that the files exist, so a truncated or swapped file would
fail later with a bare AssertionError or a shape error from deep inside torch. Here size, magic
number, labels and md5 are checked first and any problem is one message naming the file and the fix.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import Tensor
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_dense.atomic import replaced_atomically
from mnist_dense.constants import IMAGE_SIZE, NUM_CLASSES, TEST_COUNT, TRAIN_COUNT

Split = Literal["train", "test"]
DOWNLOAD_TIMEOUT_S = 30.0
# The copy of MNIST this repository carries (data/MNIST/raw), found from any working folder.
BUNDLED_DATA_DIR = Path(__file__).resolve().parents[2] / "data"
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
HEADER_BYTES = {IMAGE_MAGIC: 16, LABEL_MAGIC: 8}


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
    ("train", "images"): MNISTFile(
        "train-images-idx3-ubyte", IMAGE_MAGIC, TRAIN_COUNT, "6bbc9ace898e44ae57da46a324031adb"
    ),
    ("train", "labels"): MNISTFile(
        "train-labels-idx1-ubyte", LABEL_MAGIC, TRAIN_COUNT, "a25bea736e30d166cdddb491f175f624"
    ),
    ("test", "images"): MNISTFile(
        "t10k-images-idx3-ubyte", IMAGE_MAGIC, TEST_COUNT, "2646ac647ad5339dbf082846283269ea"
    ),
    ("test", "labels"): MNISTFile(
        "t10k-labels-idx1-ubyte", LABEL_MAGIC, TEST_COUNT, "27ae3e4e09519cfbb04c329615203637"
    ),
}


class MNISTDataError(RuntimeError):
    """A problem with the MNIST files on disk; the message names the file and the fix."""


def default_data_dir() -> str:
    """The bundled copy when the package runs from a clone of this repository, else ./data."""
    return str(BUNDLED_DATA_DIR) if (BUNDLED_DATA_DIR / "MNIST" / "raw").is_dir() else "data"


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


def ensure_mnist_files(data_dir: str | Path, splits: tuple[Split, ...] = ("train", "test")) -> Path:
    """Make the uncompressed files of `splits` exist: keep them, else un-gzip, else download (bounded)."""
    folder = raw_folder(data_dir)
    wanted = [spec for (split, _), spec in MNIST_FILES.items() if split in splits]
    missing = [f for f in wanted if not (folder / f.name).exists()]
    for spec in list(missing):
        packed = folder / f"{spec.name}.gz"
        if packed.exists():
            _gunzip(packed, folder / spec.name)
            missing.remove(spec)
    if missing:
        _download(folder, missing)
    return folder


def _gunzip(packed: Path, target: Path) -> None:
    # Several processes may unpack the same file at once (parallel `sweep` processes on a fresh clone): each writes
    # a partial file of its own and renames a whole copy into place.
    try:
        with replaced_atomically(target) as partial, gzip.open(packed, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    except PermissionError as err:
        raise MNISTDataError(
            f"Cannot write the decompressed {target.name} into {target.parent} ({err.strerror}). Make that"
            f" folder writable, decompress it yourself with `gunzip -k {packed}`, or point"
            " --data.data_dir at a writable copy of the data folder."
        ) from err
    except (OSError, EOFError) as err:
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


def load_split(data_dir: str | Path, split: Split) -> tuple[Tensor, Tensor]:
    """Check and decode one split: uint8 images (N, 28, 28) and int64 labels (N,)."""
    folder = ensure_mnist_files(data_dir, (split,))
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
