"""The data module on small IDX files written here, and on the bundled MNIST."""

from __future__ import annotations

import re
import shutil
import socket
import threading
from pathlib import Path

import pytest
import torch

from mnist_dense.checkpoints import CheckpointError
from mnist_dense.constants import MNIST_MEAN, MNIST_STD
from mnist_dense.data import MNISTDataError, MNISTDataModule, files
from mnist_dense.data.sampling import ResumableDataLoader, ResumableSampler, epoch_order, run_seed
from mnist_dense.scaling import to_model_input
from tests.conftest import BUNDLED_DATA, write_idx


def test_gz_files_are_decompressed_in_place_and_loaded(tiny_mnist: Path) -> None:
    raw = files.raw_folder(tiny_mnist)
    assert not (raw / "train-images-idx3-ubyte").exists()
    images, labels = files.load_split(tiny_mnist, "train")
    assert (raw / "train-images-idx3-ubyte").exists()
    assert images.shape == (600, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() <= 9
    assert not list(raw.glob(".*partial*"))


def test_uncompressed_files_are_used_without_the_gz(tiny_mnist: Path) -> None:
    files.ensure_mnist_files(tiny_mnist)
    for gz in files.raw_folder(tiny_mnist).glob("*.gz"):
        gz.unlink()
    images, _ = files.load_split(tiny_mnist, "test")
    assert len(images) == 200


def test_seeded_split_is_fixed_and_disjoint(tiny_mnist: Path) -> None:
    first, second = MNISTDataModule(str(tiny_mnist), val_size=100), MNISTDataModule(str(tiny_mnist), val_size=100)
    torch.manual_seed(123)
    first.setup("fit")
    torch.manual_seed(456)  # the training seed must not move the validation split
    second.setup("fit")
    assert torch.equal(first.splits["val"].images, second.splits["val"].images)
    assert len(first.splits["train"]) == 500 and len(first.splits["val"]) == 100
    train_rows = {bytes(x.numpy()) for x in first.splits["train"].images}  # the fake digits are all distinct
    assert not any(bytes(x.numpy()) in train_rows for x in first.splits["val"].images)
    assert "test" not in first.splits  # fit reads the test set only when it is tested


def test_val_size_zero_trains_on_everything(tiny_mnist: Path) -> None:
    module = MNISTDataModule(str(tiny_mnist), val_size=0)
    module.setup("fit")
    assert len(module.splits["train"]) == 600
    assert module.val_dataloader() == []


def batches(module: MNISTDataModule, loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """What a LightningModule receives: each loader batch after the data module's on_after_batch_transfer."""
    return [module.on_after_batch_transfer(batch, 0) for batch in loader]


@pytest.mark.parametrize("normalization", ["unit", "standard"])
def test_every_stage_serves_normalized_float_images_with_a_channel_axis(tiny_mnist: Path, normalization: str) -> None:
    module = MNISTDataModule(str(tiny_mnist), val_size=100, normalization=normalization, batch_size=50)
    module.setup("fit")
    module.setup("test")
    raw_images, raw_labels = files.load_split(tiny_mnist, "test")
    pixels = raw_images.double() / 255
    expected = pixels if normalization == "unit" else (pixels - MNIST_MEAN) / MNIST_STD
    for stage, loader in (("test", module.test_dataloader()), ("predict", module.predict_dataloader())):
        served = batches(module, loader)
        images, labels = torch.cat([x for x, _ in served]), torch.cat([y for _, y in served])
        assert images.shape == (200, 1, 28, 28) and images.dtype == torch.float32, stage
        assert labels.dtype == torch.int64 and torch.equal(labels, raw_labels), stage
        torch.testing.assert_close(images.double().squeeze(1), expected, rtol=0, atol=1e-6)
    for loader in (module.train_dataloader(), module.val_dataloader()):
        images, labels = batches(module, loader)[0]
        assert images.shape[1:] == (1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.int64


def test_unit_normalization_is_exactly_pixels_over_255() -> None:
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16).repeat(1, 2, 2)[:, :28, :28]
    scaled = to_model_input(pixels, "unit")
    assert scaled.shape == (1, 1, 28, 28)
    assert scaled.max() == 1.0 and scaled.min() == 0.0  # 255 -> 1, 0 -> 0: the tutorial's x / 255
    torch.testing.assert_close(scaled.double().flatten(), pixels.double().flatten() / 255, rtol=0, atol=1e-7)


def test_train_batches_cover_the_split_once_per_epoch(tiny_mnist: Path) -> None:
    module = MNISTDataModule(str(tiny_mnist), val_size=100, batch_size=32)
    module.setup("fit")
    loader = module.train_dataloader()
    sizes = [len(labels) for _, labels in loader]
    assert sizes == [32] * 15 + [500 - 32 * 15] and len(loader) == 16
    images = torch.cat([x for x, _ in loader])
    assert len({bytes(x.numpy()) for x in images}) == 500  # every training digit once


def sampler_order(seed: int, epoch: int, *, rank: int = 0, world_size: int = 1, length: int = 1000) -> torch.Tensor:
    sampler = ResumableSampler(range(length), seed=seed, rank=rank, world_size=world_size)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler))


def test_shuffle_depends_only_on_seed_and_epoch() -> None:
    assert torch.equal(sampler_order(0, 1), sampler_order(0, 1))
    assert not torch.equal(sampler_order(0, 1), sampler_order(0, 2))
    assert not torch.equal(sampler_order(0, 1), sampler_order(5, 1))
    assert not torch.equal(sampler_order(0, 1), sampler_order(1, 0))  # not DistributedSampler's seed + epoch
    assert torch.equal(sampler_order(3, 2), epoch_order(1000, 3, 2))  # the plain loop of benchmarks/ draws the same
    assert torch.equal(sampler_order(0, 1).sort().values, torch.arange(1000))


def test_ranks_take_disjoint_equal_shares_whose_batches_make_the_single_process_batches() -> None:
    shares = [sampler_order(7, 3, rank=rank, world_size=2) for rank in range(2)]
    assert {len(s) for s in shares} == {500}
    single = sampler_order(7, 3)
    for k in range(0, 500, 16):  # two ranks of 16 see exactly the one-process batch of 32
        pair = torch.cat([shares[0][k : k + 16], shares[1][k : k + 16]])
        assert torch.equal(pair.sort().values, single[2 * k : 2 * k + 32].sort().values)
    odd = [sampler_order(7, 3, rank=rank, world_size=3) for rank in range(3)]
    assert {len(s) for s in odd} == {334}  # padded so every rank runs the same number of steps
    assert set(torch.cat(odd).tolist()) == set(range(1000))


def test_loader_state_resumes_mid_epoch_at_the_next_batch(tiny_mnist: Path) -> None:
    module = MNISTDataModule(str(tiny_mnist), val_size=100, batch_size=32)
    module.setup("fit")
    loader = module.train_dataloader()
    loader.sampler.set_epoch(2)
    whole_epoch = [labels for _, labels in loader]
    iterator = iter(loader)
    for _ in range(5):
        next(iterator)
    state = loader.state_dict()
    assert state["epoch"] == 2 and state["position"] == 5 * 32

    fresh = module.train_dataloader()
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(2)
    rest = [labels for _, labels in fresh]
    assert len(rest) == 11 and all(torch.equal(a, b) for a, b in zip(rest, whole_epoch[5:], strict=True))
    fresh.sampler.set_epoch(3)  # the position belongs to epoch 2 only; later epochs start at their beginning
    assert sum(len(labels) for _, labels in fresh) == 500


def test_mid_epoch_state_refuses_another_batch_layout(tiny_mnist: Path) -> None:
    module = MNISTDataModule(str(tiny_mnist), val_size=100, batch_size=32)
    module.setup("fit")
    loader = module.train_dataloader()
    next(iter(loader))
    state = loader.state_dict()
    other = MNISTDataModule(str(tiny_mnist), val_size=100, batch_size=64)
    other.setup("fit")
    with pytest.raises(CheckpointError, match="middle of an epoch.*batch_size.: 32.*batch_size.: 64"):
        other.train_dataloader().load_state_dict(state)
    end_of_epoch = {**state, "position": 500}
    other.train_dataloader().load_state_dict(end_of_epoch)  # at an epoch boundary any layout is fine


def test_predicting_own_pictures_reads_no_mnist_file(tmp_path: Path) -> None:
    from torchvision.io import write_png

    from mnist_dense import MNISTClassifier
    from tests.conftest import cpu_trainer

    folder = tmp_path / "mine"
    folder.mkdir()
    digit = torch.zeros(1, 40, 40, dtype=torch.uint8)
    digit[0, 8:32, 18:22] = 255
    write_png(digit, str(folder / "one.png"))
    module = MNISTDataModule(str(tmp_path / "no-data-here"), predict_images=str(folder))
    (output,) = cpu_trainer(tmp_path).predict(MNISTClassifier(), datamodule=module)
    assert output["probabilities"].shape == (1, 10) and output["target"].tolist() == [-1]
    assert not (tmp_path / "no-data-here").exists()


def test_mean_and_std_constants_match_the_bundled_training_images() -> None:
    images, _ = files.load_split(BUNDLED_DATA, "train")
    pixels = images.double() / 255
    assert round(pixels.mean().item(), 4) == MNIST_MEAN
    assert round(pixels.std().item(), 4) == MNIST_STD


def test_bundled_mnist_is_the_original(tmp_path: Path) -> None:
    train_images, train_labels = files.load_split(BUNDLED_DATA, "train")
    test_images, test_labels = files.load_split(BUNDLED_DATA, "test")
    assert train_images.shape == (60_000, 28, 28) and test_images.shape == (10_000, 28, 28)
    assert torch.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train_labels[0].item() == 5  # the tutorial's first training image is a 5


# --- bad input: each case gets an error that names the file and the fix -------------------------


def _break(tiny_mnist: Path, name: str, content: bytes) -> Path:
    files.ensure_mnist_files(tiny_mnist)
    path = files.raw_folder(tiny_mnist) / name
    path.write_bytes(content)
    return path


def test_truncated_image_file_is_named(tiny_mnist: Path) -> None:
    raw = files.raw_folder(tiny_mnist)
    files.ensure_mnist_files(tiny_mnist)
    path = _break(tiny_mnist, "train-images-idx3-ubyte", (raw / "train-images-idx3-ubyte").read_bytes()[:5000])
    with pytest.raises(MNISTDataError, match="truncated") as err:
        files.load_split(tiny_mnist, "train")
    assert str(path) in str(err.value) and "data/MNIST/raw" in str(err.value)


def test_empty_label_file_is_named(tiny_mnist: Path) -> None:
    path = _break(tiny_mnist, "t10k-labels-idx1-ubyte", b"")
    with pytest.raises(MNISTDataError, match="empty") as err:
        files.load_split(tiny_mnist, "test")
    assert str(path) in str(err.value)


def test_label_file_in_place_of_image_file_is_named(tiny_mnist: Path) -> None:
    raw = files.raw_folder(tiny_mnist)
    files.ensure_mnist_files(tiny_mnist)
    shutil.copy(raw / "t10k-labels-idx1-ubyte", raw / "t10k-images-idx3-ubyte")
    with pytest.raises(MNISTDataError, match="swapped") as err:
        files.load_split(tiny_mnist, "test")
    assert "t10k-images-idx3-ubyte" in str(err.value) and "labels" in str(err.value)


def test_wrong_magic_number_is_named(tiny_mnist: Path) -> None:
    raw = files.raw_folder(tiny_mnist)
    files.ensure_mnist_files(tiny_mnist)
    content = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    content[:4] = (1234).to_bytes(4, "big")
    _break(tiny_mnist, "train-labels-idx1-ubyte", bytes(content))
    with pytest.raises(MNISTDataError, match="magic number 1234"):
        files.load_split(tiny_mnist, "train")


def test_labels_outside_0_to_9_are_named(tiny_mnist: Path) -> None:
    raw = files.raw_folder(tiny_mnist)
    files.ensure_mnist_files(tiny_mnist)
    content = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    content[8 + 17] = 12
    _break(tiny_mnist, "train-labels-idx1-ubyte", bytes(content))
    with pytest.raises(MNISTDataError, match=r"outside 0-9 \(the first at index 17: 12\)"):
        files.load_split(tiny_mnist, "train")


@pytest.mark.parametrize("name", [spec.name for spec in files.MNIST_FILES.values()])
def test_one_changed_value_in_any_of_the_four_files_fails_the_md5_check(tiny_mnist: Path, name: str) -> None:
    """Size, magic number and label range all still pass: only the md5 tells this file from the original."""
    raw = files.raw_folder(tiny_mnist)
    files.ensure_mnist_files(tiny_mnist)
    content = bytearray((raw / name).read_bytes())
    header = 16 if "images" in name else 8
    content[header + 3] = (content[header + 3] + 2) % 10 if "labels" in name else content[header + 3] ^ 0xFF
    path = _break(tiny_mnist, name, bytes(content))
    with pytest.raises(MNISTDataError, match="md5") as err:
        files.load_split(tiny_mnist, "train" if name.startswith("train") else "test")
    assert str(path) in str(err.value) and f"{name}.gz" in str(err.value)


def test_corrupt_gzip_is_named_and_leaves_nothing_half_written(tiny_mnist: Path) -> None:
    raw = files.raw_folder(tiny_mnist)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(MNISTDataError, match="not a readable gzip") as err:
        files.ensure_mnist_files(tiny_mnist)
    assert "train-images-idx3-ubyte.gz" in str(err.value)
    assert not (raw / "train-images-idx3-ubyte").exists() and not list(raw.glob(".*partial*"))


def test_missing_files_fail_the_bounded_download_with_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # refused at once: no network needed
    with pytest.raises(MNISTDataError) as err:
        files.ensure_mnist_files(tmp_path / "empty")
    message = str(err.value)
    assert str((tmp_path / "empty" / "MNIST" / "raw").resolve()) in message
    for spec in files.MNIST_FILES.values():
        assert f"{spec.name}.gz" in message


@pytest.mark.usefixtures("data_folder_read_only")
def test_unwritable_data_folder_is_named(tiny_mnist: Path) -> None:
    raw = files.raw_folder(tiny_mnist)
    with pytest.raises(MNISTDataError, match="writable") as err:
        files.ensure_mnist_files(tiny_mnist)
    assert str(raw) in str(err.value)
    assert not [p for p in raw.iterdir() if not p.name.endswith(".gz")]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"batch_size": 0}, "batch_size"), ({"val_size": -1}, "val_size"), ({"val_size": 60_000}, "val_size")],
)
def test_nonsense_arguments_are_refused_in_python(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        MNISTDataModule(**kwargs)


def test_the_training_file_is_read_and_checked_once_for_train_and_val(
    tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_dense.data import datamodule

    reads = []
    monkeypatch.setattr(
        datamodule, "load_split", lambda data_dir, split: reads.append(split) or files.load_split(data_dir, split)
    )
    module = MNISTDataModule(str(tiny_mnist), val_size=100)
    module.setup("fit")
    assert reads == ["train"] and len(module.splits["train"]) == 500 and len(module.splits["val"]) == 100


def test_two_unpackers_at_once_both_succeed(tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parallel processes on a fresh clone (two `sweep`s on one study) may un-gzip the same file at the same time."""
    raw = files.raw_folder(tiny_mnist)
    copy, started, resume, errors = shutil.copyfileobj, threading.Event(), threading.Event(), []

    def copy_paused_in_the_thread(src, dst, length=0) -> None:
        if threading.current_thread() is not threading.main_thread():
            started.set()  # its partial file is open: hold it there while the main thread unpacks the same file
            resume.wait(30)
        copy(src, dst, length)

    monkeypatch.setattr(files.shutil, "copyfileobj", copy_paused_in_the_thread)

    def unpack() -> None:
        try:
            files.ensure_mnist_files(tiny_mnist, ("train",))
        except MNISTDataError as err:
            errors.append(err)

    first = threading.Thread(target=unpack)
    first.start()
    assert started.wait(30)
    files.ensure_mnist_files(tiny_mnist, ("train",))  # the second unpacker finishes first
    resume.set()
    first.join(30)
    assert not errors
    images, labels = files.load_split(tiny_mnist, "train")  # whole: sizes and md5 checked
    assert len(images) == len(labels) == 600 and not list(raw.glob(".*partial*"))


def test_the_bundled_copy_is_the_default_data_folder_only_where_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert files.default_data_dir() == str(BUNDLED_DATA.resolve())  # this clone carries data/MNIST/raw
    monkeypatch.setattr(files, "BUNDLED_DATA_DIR", tmp_path)  # an installed package: no bundled copy beside it
    assert files.default_data_dir() == "data"
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    assert files.default_data_dir() == str(tmp_path)


@pytest.mark.parametrize(("error", "detail"), [(OSError("refused\nand more"), "OSError: refused"),
                                               (TimeoutError(), "TimeoutError: no detail")])  # fmt: skip
def test_a_failed_download_is_one_message_naming_the_files_the_failure_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, detail: str
) -> None:
    timeouts, asked = [], []

    def mirror_down(root: str, train: bool, download: bool) -> None:
        timeouts.append(socket.getdefaulttimeout())
        asked.append((root, download))
        raise error

    monkeypatch.setattr(files, "MNIST", mirror_down)
    socket.setdefaulttimeout(7.5)  # the caller's own timeout, which the download puts back
    try:
        with pytest.raises(MNISTDataError) as refused:
            files.ensure_mnist_files(tmp_path, ("test",))
        assert socket.getdefaulttimeout() == 7.5
    finally:
        socket.setdefaulttimeout(None)
    assert asked == [(str(tmp_path.resolve()), True)]  # torchvision's MNIST, downloading, under data_dir
    folder = files.raw_folder(tmp_path)
    assert str(refused.value) == (
        f"MNIST files missing from {folder}: t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte. Downloading them failed"
        f" ({detail}). Put the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,"
        f" t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, gzip or uncompressed) in {folder}, for example by"
        " copying data/MNIST/raw/ from a clone of this repository, or point --data.data_dir at a folder whose"
        " MNIST/raw holds them."
    )
    assert timeouts == [files.DOWNLOAD_TIMEOUT_S]  # bounded, then restored


def loader_at(tiny_mnist: Path, batch_size: int) -> torch.utils.data.DataLoader:
    module = MNISTDataModule(str(tiny_mnist), val_size=100, batch_size=batch_size)
    module.setup("fit")
    return module.train_dataloader()


def test_a_position_inside_the_epoch_needs_the_same_layout_and_its_ends_do_not(tiny_mnist: Path) -> None:
    saved = loader_at(tiny_mnist, 1).state_dict()
    other = loader_at(tiny_mnist, 64)
    for position in (0, 500):  # the start or the end of an epoch: nothing to skip, any layout resumes
        other.load_state_dict({**saved, "epoch": 2, "position": position})
        assert other.sampler.resume_at == (2, position)
    with pytest.raises(CheckpointError) as refused:
        other.load_state_dict({**saved, "position": 1})  # one image into the epoch, at batch_size 1
    assert str(refused.value) == (
        "The checkpoint was saved in the middle of an epoch whose steps were laid out as {'train_images': 500,"
        " 'batch_size': 1, 'processes': 1}; this run lays them out as {'train_images': 500, 'batch_size': 64,"
        " 'processes': 1}, so the steps already done cannot be skipped exactly. Resume with the same"
        " --data.batch_size, --data.val_size and --trainer.devices/num_nodes, or resume from an end-of-epoch"
        " checkpoint (last.ckpt or a best checkpoint)."
    )


def test_a_checkpoint_without_a_loader_position_resumes_at_the_start_of_its_epoch(tiny_mnist: Path) -> None:
    loader = loader_at(tiny_mnist, 32)
    loader.load_state_dict({})  # a checkpoint of a run whose loader saved nothing (another sampler)
    assert sum(len(labels) for _, labels in loader) == 500


def test_the_run_seed_is_lightnings_and_0_when_unseeded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    assert run_seed() == 0
    monkeypatch.setenv("PL_GLOBAL_SEED", "1234")
    assert run_seed() == 1234


def test_a_sampler_with_its_defaults_is_one_process_at_the_start_of_its_epoch() -> None:
    sampler = ResumableSampler(range(10), seed=3)
    loader = ResumableDataLoader(range(10), batch_size=4, sampler=sampler)
    assert loader.state_dict() == {"epoch": 0, "position": 0, "layout": {"train_images": 10, "batch_size": 4,
                                                                         "processes": 1}}  # fmt: skip
    assert sorted(sampler) == list(range(10)) and sampler.position == 10


def test_the_layout_names_the_processes_and_the_batch() -> None:
    two = ResumableDataLoader(range(10), batch_size=3, sampler=ResumableSampler(range(10), seed=0, world_size=2))
    assert two.layout() == {"train_images": 10, "batch_size": 3, "processes": 2}
    unbatched = ResumableDataLoader(range(10), batch_size=None)
    assert unbatched.layout() == {"train_images": 10, "batch_size": 1, "processes": 1}


def test_model_input_divides_by_255_unless_told_otherwise() -> None:
    pixels = torch.tensor([0, 51, 255], dtype=torch.uint8).repeat(1, 262)[:, :784].reshape(1, 28, 28)
    assert torch.equal(to_model_input(pixels), pixels.float().reshape(1, 1, 28, 28) / 255.0)


def _refusal(tiny_mnist: Path, name: str, content: bytes) -> tuple[Path, str, str]:
    """Write `content` over the unpacked file `name`; the error loading its split gives, and the fix it must end in."""
    files.ensure_mnist_files(tiny_mnist)
    path = _break(tiny_mnist, name, content)
    with pytest.raises(MNISTDataError) as err:
        files.load_split(tiny_mnist, "train" if name.startswith("train") else "test")
    fix = f"Replace it with the original {name}.gz from data/MNIST/raw/ of this repository (and delete {path})."
    return path, str(err.value), fix


def test_a_damaged_file_gets_the_whole_sentence_that_says_what_is_wrong_and_how_to_fix_it(tiny_mnist: Path) -> None:
    raw = files.raw_folder(tiny_mnist)
    files.ensure_mnist_files(tiny_mnist)
    images = (raw / "train-images-idx3-ubyte").read_bytes()
    labels = (raw / "train-labels-idx1-ubyte").read_bytes()
    spec = files.MNIST_FILES[("train", "images")]

    path, message, fix = _refusal(tiny_mnist, "train-images-idx3-ubyte", b"")
    assert message == f"{path} is empty (0 bytes). {fix}"
    path, message, fix = _refusal(tiny_mnist, "train-images-idx3-ubyte", images[:3])
    assert message == f"{path} is truncated (3 bytes). {fix}"
    path, message, fix = _refusal(tiny_mnist, "train-images-idx3-ubyte", images[:4])  # a whole magic number, no more
    assert message == f"{path} is 4 bytes, expected {spec.size:,} ({spec.count:,} items): the file is truncated. {fix}"
    path, message, fix = _refusal(tiny_mnist, "train-images-idx3-ubyte", images + b"\0")
    assert message == (
        f"{path} is {spec.size + 1:,} bytes, expected {spec.size:,} ({spec.count:,} items): the file is too long. {fix}"
    )
    path, message, fix = _refusal(tiny_mnist, "train-images-idx3-ubyte", b"\0\0\0\7" + images[4:])
    assert message == f"{path} has magic number 7, expected 2051: it is not an MNIST IDX file, not images (were two" \
        f" files swapped?). {fix}"  # fmt: skip
    path, message, fix = _refusal(tiny_mnist, "train-images-idx3-ubyte", labels)
    assert message == f"{path} has magic number 2049, expected 2051: it is a file of labels, not images (were two" \
        f" files swapped?). {fix}"  # fmt: skip
    _break(tiny_mnist, "train-images-idx3-ubyte", images)
    path, message, fix = _refusal(tiny_mnist, "train-labels-idx1-ubyte", images)
    assert message == f"{path} has magic number 2051, expected 2049: it is a file of images, not labels (were two" \
        f" files swapped?). {fix}"  # fmt: skip


def test_images_of_another_shape_and_a_label_of_10_are_refused_with_the_whole_sentence(tiny_mnist: Path) -> None:
    raw = files.raw_folder(tiny_mnist)
    files.ensure_mnist_files(tiny_mnist)
    images = (raw / "train-images-idx3-ubyte").read_bytes()
    count = files.MNIST_FILES[("train", "images")].count
    write_idx(raw / "train-images-idx3-ubyte", torch.zeros(count, 784, 1, dtype=torch.uint8))  # same size, 784x1
    with pytest.raises(MNISTDataError) as err:
        files.load_split(tiny_mnist, "train")
    assert str(err.value) == f"{raw / 'train-images-idx3-ubyte'} holds (784, 1) images, expected 28x28."
    (raw / "train-images-idx3-ubyte").write_bytes(images)
    content = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    content[8 + 3] = 10  # one past the last class
    _break(tiny_mnist, "train-labels-idx1-ubyte", bytes(content))
    with pytest.raises(MNISTDataError) as err:
        files.load_split(tiny_mnist, "train")
    assert str(err.value) == (
        f"{raw / 'train-labels-idx1-ubyte'} has 1 labels outside 0-9 (the first at index 3: 10). Replace it with the"
        " original train-labels-idx1-ubyte.gz from data/MNIST/raw/ of this repository."
    )


def test_loading_one_split_needs_only_that_splits_files(tiny_mnist: Path) -> None:
    raw = files.raw_folder(tiny_mnist)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (raw / name).unlink()
    images, labels = files.load_split(tiny_mnist, "test")
    assert len(images) == len(labels) == files.MNIST_FILES[("test", "labels")].count
    assert not (raw / "train-images-idx3-ubyte").exists()


def test_a_gzip_that_cannot_be_opened_is_named_with_the_fix(tiny_mnist: Path) -> None:
    """A .gz that is a folder fails before anything is written: the one error, not a missing partial file's."""
    raw = files.raw_folder(tiny_mnist)
    (raw / "train-images-idx3-ubyte.gz").unlink()
    (raw / "train-images-idx3-ubyte.gz").mkdir()
    with pytest.raises(MNISTDataError) as err:
        files.ensure_mnist_files(tiny_mnist)
    message = str(err.value)
    assert message.startswith(f"{raw / 'train-images-idx3-ubyte.gz'} is not a readable gzip file (")
    assert message.endswith(
        "). Replace it with the original from data/MNIST/raw/ of this repository. " + files._how_to_fix(raw)  # noqa: SLF001 - the sentence every missing-file error ends with
    )


@pytest.mark.usefixtures("data_folder_read_only")
def test_an_unwritable_data_folder_gets_the_whole_sentence_with_its_three_fixes(tiny_mnist: Path) -> None:
    raw = files.raw_folder(tiny_mnist)
    with pytest.raises(MNISTDataError) as err:
        files.ensure_mnist_files(tiny_mnist)
    assert re.fullmatch(
        rf"Cannot write the decompressed [\w-]+ into {re.escape(str(raw))} \(.+\)\. Make that folder writable,"
        rf" decompress it yourself with `gunzip -k {re.escape(str(raw))}/[\w-]+\.gz`, or point --data.data_dir at a"
        " writable copy of the data folder.",
        str(err.value),
    )
