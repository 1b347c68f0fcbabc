"""`MNISTDataModule`: MNIST held in memory as uint8 tensors, served as `(images, labels)` batches any model can use.

Every batch, for train, val, test and predict, is float images (B, 1, 28, 28), normalized, and int64
labels (B,) (-1 for your own pictures, which have none): the convention of torchvision and of
lightning-hydra-template. What keeps it fast: the images are decoded once and kept as uint8 tensors
(on the accelerator, when there is one), a batch is one index into them (`__getitems__`, no per-image
Python work), and scaling to floats happens on the batch's device in `on_after_batch_transfer`.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from mnist_dense.constants import NOT_A_DIGIT, TRAIN_COUNT, TUTORIAL_BATCH_SIZE
from mnist_dense.data.files import Split, default_data_dir, ensure_mnist_files, load_split
from mnist_dense.data.sampling import (
    EvaluationShare,
    ResumableDataLoader,
    ResumableSampler,
    run_seed,
    split_indices,
)
from mnist_dense.scaling import NORMALIZATIONS, Normalization, to_model_input
from mnist_dense.translate import random_translate

Batch = tuple[Tensor, Tensor]


class InMemoryDigits(Dataset):
    """uint8 images (N, 28, 28) and int64 labels (N,), taken a whole batch at a time by a list of indices."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Batch:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> Batch:
        # non_blocking: on a GPU the index list is copied up without making the host wait
        index = torch.tensor(indices).to(self.images.device, non_blocking=True)
        return self.images[index], self.labels[index]


def source_file(split: str) -> Split:
    """The IDX files a split comes from: validation images are held out of the training files."""
    return "test" if split == "test" else "train"


def with_non_digits(images: Tensor, labels: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The training split and `count` synthetic non-digits (training fonts and characters, seed 0), labelled 10."""
    from mnist_dense.non_digits import TRAINED_KINDS, non_digit_pictures

    per_kind = -(-count // len(TRAINED_KINDS))
    extra = non_digit_pictures(seed=0, per_kind=per_kind, measured=False, kinds=TRAINED_KINDS).images[:count]
    marks = torch.full((len(extra),), NOT_A_DIGIT, dtype=labels.dtype)
    return torch.cat([images, extra]), torch.cat([labels, marks])


def data_argument_problem(
    batch_size: object, val_size: object, normalization: object, eval_batch_size: object, max_translate: object,
    non_digits: object,
) -> str | None:  # fmt: skip
    """What is wrong with `MNISTDataModule`'s arguments, as "NAME VALUE: the fix" (None when nothing is).

    The one check of them: `__init__` raises it, and the command line refuses it before anything runs
    (`--data.NAME VALUE: ...`).
    """
    counts = (
        ("batch_size", batch_size, 1, f"a whole number of 1 or more (Keras' default is {TUTORIAL_BATCH_SIZE})"),
        ("val_size", val_size, 0, f"0 (no validation set, the tutorial's) up to {TRAIN_COUNT - 1:,}"),
        ("eval_batch_size", eval_batch_size, 1, "a whole number of 1 or more"),
        ("max_translate", max_translate, 0, "0 (no shifts, the tutorial's) or more pixels"),
        ("non_digits", non_digits, 0, "0 (none, the tutorial's) or more"),
    )
    for name, value, least, fix in counts:
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or value < least or (name == "val_size" and value >= TRAIN_COUNT):
            return f"{name} {value}: give {fix}."
    if normalization not in NORMALIZATIONS:
        return f"normalization {normalization!r}: use one of {', '.join(map(repr, NORMALIZATIONS))}."
    return None


def as_batch(batch: Batch) -> Batch:
    """`__getitems__` already returns the batch: nothing to collate (a module-level function, so it pickles)."""
    return batch


class MNISTDataModule(L.LightningDataModule):
    """MNIST from `<data_dir>/MNIST/raw`, checked, held in memory, normalized on the batch's device.

    Args:
        data_dir: Folder holding MNIST/raw with the four IDX files (gzip or not); by default the copy in this
            repository's data/, wherever you run from.
        batch_size: Training batch size per process; 32 is Keras' default, as in the tutorial.
        val_size: Training images held out for validation (a fixed split, the same for every seed); 0, the
            tutorial's choice, trains on all 60,000 and validates nothing.
        normalization: "unit" divides pixels by 255 as the tutorial does; "standard" then subtracts
            the MNIST mean and divides by its std.
        eval_batch_size: Batch size for validation, test and predict; it does not change their results.
        max_translate: Shift each training digit by a random 0 to this many pixels along each axis (0: the tutorial,
            no shifts); it teaches the network off-centre digits. Validation, test and predict are never shifted.
        predict_images: For `predict`: a folder or glob of your own digit pictures (any format Pillow reads),
            prepared as MNIST's digits were (see `mnist_dense.pictures`); unset predicts the test set.
        non_digits: Synthetic pictures that are not digits (letters, scribbles, noise, clutter) added to the training
            split, labelled 10: with `--model.non_digit_weight` the network learns to be unsure of them (0: none,
            the tutorial's training).
    """

    def __init__(
        self,
        data_dir: str = default_data_dir(),
        batch_size: int = TUTORIAL_BATCH_SIZE,
        val_size: int = 0,
        normalization: Normalization = "unit",
        eval_batch_size: int = 1000,
        max_translate: int = 0,
        predict_images: str | None = None,
        non_digits: int = 0,
    ) -> None:
        super().__init__()
        problem = data_argument_problem(batch_size, val_size, normalization, eval_batch_size, max_translate, non_digits)
        if problem:
            raise ValueError(f"MNISTDataModule: {problem}")
        self.save_hyperparameters()
        self.data_dir, self.batch_size, self.val_size = data_dir, batch_size, val_size
        self.normalization, self.eval_batch_size, self.max_translate = normalization, eval_batch_size, max_translate
        self.predict_images, self.non_digits = predict_images, non_digits
        self.own_images = None  # set by setup("predict") with --data.predict_images: file names for predictions.csv
        self.splits: dict[str, InMemoryDigits] = {}

    def _needed_splits(self, stage: str | None) -> tuple[str, ...]:
        """Read only what the stage uses: predicting your own pictures reads no MNIST file at all."""
        if stage == "predict":
            return () if self.predict_images else ("test",)
        return {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "", ("train", "val", "test")
        )

    def prepare_data(self) -> None:
        """Un-gzip (or download) once per node, before `setup` runs on every process."""
        stage = self.trainer.state.fn if self.trainer is not None else None
        files = {source_file(split) for split in self._needed_splits(stage)}
        if files:
            ensure_mnist_files(self.data_dir, tuple(sorted(files)))

    def setup(self, stage: str | None = None) -> None:
        device = self._device()
        files: dict[str, tuple[Tensor, Tensor]] = {}  # each IDX pair is read and checked once, even for train and val
        for split in self._needed_splits(stage):
            if split not in self.splits:
                source = source_file(split)
                if source not in files:
                    files[source] = load_split(self.data_dir, source)
                self.splits[split] = self._select(split, *files[source], device)
        if stage == "predict" and self.predict_images:
            from mnist_dense.pictures import load_own_images  # decoding pictures is only needed here

            self.own_images = load_own_images(self.predict_images)
            unknown = torch.full((len(self.own_images.images),), -1, dtype=torch.long)
            self.splits["own"] = InMemoryDigits(self.own_images.images.to(device), unknown.to(device))

    def _select(self, split: str, images: Tensor, labels: Tensor, device: torch.device) -> InMemoryDigits:
        """The split's images, moved to the device once: the test set whole, train and val by the fixed split."""
        if split != "test":
            train_index, val_index = split_indices(len(labels), self.val_size)
            index = train_index if split == "train" else val_index
            images, labels = images[index], labels[index]
            if split == "train" and self.non_digits:
                images, labels = with_non_digits(images, labels, self.non_digits)
        return InMemoryDigits(images.to(device), labels.to(device))

    def _device(self) -> torch.device:
        """The uint8 data moves to the accelerator once; batches are then taken where they are used."""
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _eval_loader(self, split: str) -> DataLoader:
        """The whole split in order; under DDP each rank's `EvaluationShare` of it, so every image counts once."""
        dataset, trainer = self.splits[split], self.trainer
        if trainer is None or trainer.world_size == 1:
            return DataLoader(dataset, batch_size=self.eval_batch_size, collate_fn=as_batch)
        sampler = EvaluationShare(dataset, rank=trainer.global_rank, world_size=trainer.world_size)
        return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=sampler, collate_fn=as_batch)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        dataset = self.splits["train"]
        sampler = ResumableSampler(dataset, seed=run_seed(), rank=rank, world_size=world_size)
        return ResumableDataLoader(dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=as_batch)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("val") if self.val_size else []

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("own" if self.predict_images else "test")

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """uint8 pixels -> normalized floats (B, 1, 28, 28) on the batch's device; training digits shifted first.

        A bare tensor is a model's `example_input_array` (Lightning's summary sends it through this hook): it is
        already model input and passes unchanged.
        """
        if isinstance(batch, Tensor):
            return batch
        images, labels = batch
        if self.max_translate and self.trainer is not None and self.trainer.training:
            images = random_translate(images, self.max_translate)
        return to_model_input(images, self.normalization), labels
