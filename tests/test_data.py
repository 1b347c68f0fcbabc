"""The data module on small IDX files written here, and on the bundled MNIST."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mnist_dense import data
from mnist_dense.data import IndexBatches, MNISTDataError, MNISTDataModule
from tests.conftest import BUNDLED_DATA


def test_gz_files_are_decompressed_in_place_and_loaded(tiny_mnist: Path) -> None:
    raw = data.raw_folder(tiny_mnist)
    assert not (raw / "train-images-idx3-ubyte").exists()
    images, labels = data.load_split(tiny_mnist, "train")
    assert (raw / "train-images-idx3-ubyte").exists()
    assert images.shape == (600, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() <= 9
    assert not list(raw.glob(".*partial"))


def test_uncompressed_files_are_used_without_the_gz(tiny_mnist: Path) -> None:
    data.ensure_mnist_files(tiny_mnist)
    for gz in data.raw_folder(tiny_mnist).glob("*.gz"):
        gz.unlink()
    images, _ = data.load_split(tiny_mnist, "test")
    assert len(images) == 200


def test_seeded_split_is_fixed_and_disjoint(tiny_mnist: Path) -> None:
    first, second = MNISTDataModule(str(tiny_mnist), val_size=100), MNISTDataModule(str(tiny_mnist), val_size=100)
    torch.manual_seed(123)
    first.setup("fit")
    torch.manual_seed(456)  # the training seed must not move the validation split
    second.setup("fit")
    assert torch.equal(first.splits["val"][0], second.splits["val"][0])
    assert len(first.splits["train"][1]) == 500 and len(first.splits["val"][1]) == 100
    train_rows = {bytes(x.numpy()) for x in first.splits["train"][0]}  # the fake digits are all distinct
    assert not any(bytes(x.numpy()) in train_rows for x in first.splits["val"][0])


def test_val_size_zero_trains_on_everything(tiny_mnist: Path) -> None:
    module = MNISTDataModule(str(tiny_mnist), val_size=0)
    module.setup("fit")
    assert len(module.splits["train"][1]) == 600
    assert module.val_dataloader() == []


@pytest.mark.parametrize("normalization", ["unit", "standard"])
def test_batches_are_normalized_the_same_way_for_every_stage(tiny_mnist: Path, normalization: str) -> None:
    module = MNISTDataModule(str(tiny_mnist), val_size=100, normalization=normalization, batch_size=50)
    module.setup("fit")
    expected = data.to_model_input(module.splits["test"][0][:50], normalization)
    for loader in (module.test_dataloader(), module.predict_dataloader()):
        images, _ = module.on_after_batch_transfer(next(iter(loader)), 0)
        assert images.dtype == torch.float32
        torch.testing.assert_close(images[:50] if len(images) >= 50 else images, expected[: len(images)])
    train_batches = module.on_after_batch_transfer(next(iter(module.train_dataloader())), 0)
    images, _ = train_batches[0]
    if normalization == "unit":
        assert images.min() >= 0 and images.max() <= 1
    else:
        assert images.min() < 0


def test_train_batches_cover_the_split_once_per_epoch(tiny_mnist: Path) -> None:
    module = MNISTDataModule(str(tiny_mnist), val_size=100, batch_size=32, steps_per_execution=4)
    module.setup("fit")
    loader = module.train_dataloader()
    groups = list(loader)
    sizes = [len(y) for group in groups for _, y in group]
    assert sum(sizes) == 500 and sizes[:-1] == [32] * (len(sizes) - 1) and sizes[-1] == 500 - 32 * 15
    assert all(len(group) <= 4 for group in groups) and len(groups) == len(loader) == 4


def test_shuffle_depends_only_on_seed_and_epoch() -> None:
    def order(seed: int, epoch: int) -> torch.Tensor:
        sampler = IndexBatches(1000, 32, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return torch.cat(list(sampler))

    assert torch.equal(order(0, 1), order(0, 1))
    assert not torch.equal(order(0, 1), order(0, 2))
    assert not torch.equal(order(0, 1), order(1, 1))
    assert torch.equal(order(0, 1).sort().values, torch.arange(1000))


def test_ranks_take_disjoint_equal_shares_of_the_epoch() -> None:
    shares = []
    for rank in range(3):
        sampler = IndexBatches(1000, 32, shuffle=True, seed=7, rank=rank, world_size=3)
        sampler.set_epoch(3)
        shares.append(torch.cat(list(sampler)))
    assert {len(s) for s in shares} == {334}  # padded so every rank runs the same number of steps
    combined = torch.cat(shares)
    assert set(combined.tolist()) == set(range(1000)) and len(combined) - len(set(combined.tolist())) == 2


def test_mean_and_std_constants_match_the_bundled_training_images() -> None:
    images, _ = data.load_split(BUNDLED_DATA, "train")
    pixels = images.double() / 255
    assert round(pixels.mean().item(), 4) == data.MNIST_MEAN
    assert round(pixels.std().item(), 4) == data.MNIST_STD


def test_bundled_mnist_is_the_original(tmp_path: Path) -> None:
    train_images, train_labels = data.load_split(BUNDLED_DATA, "train")
    test_images, test_labels = data.load_split(BUNDLED_DATA, "test")
    assert train_images.shape == (60_000, 28, 28) and test_images.shape == (10_000, 28, 28)
    assert torch.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train_labels[0].item() == 5  # the tutorial's first training image is a 5


# --- bad input: each case gets an error that names the file and the fix -------------------------


def _break(tiny_mnist: Path, name: str, content: bytes) -> Path:
    data.ensure_mnist_files(tiny_mnist)
    path = data.raw_folder(tiny_mnist) / name
    path.write_bytes(content)
    return path


def test_truncated_image_file_is_named(tiny_mnist: Path) -> None:
    raw = data.raw_folder(tiny_mnist)
    data.ensure_mnist_files(tiny_mnist)
    path = _break(tiny_mnist, "train-images-idx3-ubyte", (raw / "train-images-idx3-ubyte").read_bytes()[:5000])
    with pytest.raises(MNISTDataError, match="truncated") as err:
        data.load_split(tiny_mnist, "train")
    assert str(path) in str(err.value) and "data/MNIST/raw" in str(err.value)


def test_empty_label_file_is_named(tiny_mnist: Path) -> None:
    path = _break(tiny_mnist, "t10k-labels-idx1-ubyte", b"")
    with pytest.raises(MNISTDataError, match="empty") as err:
        data.load_split(tiny_mnist, "test")
    assert str(path) in str(err.value)


def test_label_file_in_place_of_image_file_is_named(tiny_mnist: Path) -> None:
    raw = data.raw_folder(tiny_mnist)
    data.ensure_mnist_files(tiny_mnist)
    shutil.copy(raw / "t10k-labels-idx1-ubyte", raw / "t10k-images-idx3-ubyte")
    with pytest.raises(MNISTDataError, match="swapped") as err:
        data.load_split(tiny_mnist, "test")
    assert "t10k-images-idx3-ubyte" in str(err.value) and "labels" in str(err.value)


def test_wrong_magic_number_is_named(tiny_mnist: Path) -> None:
    raw = data.raw_folder(tiny_mnist)
    data.ensure_mnist_files(tiny_mnist)
    content = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    content[:4] = (1234).to_bytes(4, "big")
    _break(tiny_mnist, "train-labels-idx1-ubyte", bytes(content))
    with pytest.raises(MNISTDataError, match="magic number 1234"):
        data.load_split(tiny_mnist, "train")


def test_labels_outside_0_to_9_are_named(tiny_mnist: Path) -> None:
    raw = data.raw_folder(tiny_mnist)
    data.ensure_mnist_files(tiny_mnist)
    content = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    content[8 + 17] = 12
    _break(tiny_mnist, "train-labels-idx1-ubyte", bytes(content))
    with pytest.raises(MNISTDataError, match=r"outside 0-9 \(the first at index 17: 12\)"):
        data.load_split(tiny_mnist, "train")


def test_altered_bytes_fail_the_md5_check(tiny_mnist: Path) -> None:
    raw = data.raw_folder(tiny_mnist)
    data.ensure_mnist_files(tiny_mnist)
    content = bytearray((raw / "t10k-images-idx3-ubyte").read_bytes())
    content[-1] ^= 0xFF
    _break(tiny_mnist, "t10k-images-idx3-ubyte", bytes(content))
    with pytest.raises(MNISTDataError, match="md5"):
        data.load_split(tiny_mnist, "test")


def test_corrupt_gzip_is_named_and_leaves_nothing_half_written(tiny_mnist: Path) -> None:
    raw = data.raw_folder(tiny_mnist)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(MNISTDataError, match="not a readable gzip") as err:
        data.ensure_mnist_files(tiny_mnist)
    assert "train-images-idx3-ubyte.gz" in str(err.value)
    assert not (raw / "train-images-idx3-ubyte").exists() and not list(raw.glob(".*partial"))


def test_missing_files_fail_the_bounded_download_with_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # refused at once: no network needed
    with pytest.raises(MNISTDataError) as err:
        data.ensure_mnist_files(tmp_path / "empty")
    message = str(err.value)
    assert str((tmp_path / "empty" / "MNIST" / "raw").resolve()) in message
    for spec in data.MNIST_FILES.values():
        assert f"{spec.name}.gz" in message


@pytest.mark.usefixtures("data_folder_read_only")
def test_unwritable_data_folder_is_named(tiny_mnist: Path) -> None:
    raw = data.raw_folder(tiny_mnist)
    with pytest.raises(MNISTDataError, match="writable") as err:
        data.ensure_mnist_files(tiny_mnist)
    assert str(raw) in str(err.value)
    assert not [p for p in raw.iterdir() if not p.name.endswith(".gz")]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"batch_size": 0}, "batch_size"), ({"val_size": -1}, "val_size"), ({"val_size": 60_000}, "val_size")],
)
def test_nonsense_arguments_are_refused_in_python(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        MNISTDataModule(**kwargs)
