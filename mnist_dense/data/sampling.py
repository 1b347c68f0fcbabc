"""Which images each step sees: the fixed validation split, each epoch's shuffle, and the position inside it.

Each epoch's order depends only on the run's seed and the epoch (torch's `DistributedSampler` rule), so
a run resumed at an epoch boundary shuffles exactly as the run left alone. The position inside an epoch
is saved in checkpoints through the public `state_dict`/`load_state_dict` of the training DataLoader,
which Lightning stores and restores on its own; a run resumed mid-epoch skips what was already trained.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mnist_dense.checkpoints import CheckpointError

# The validation split has its own seed so that runs with different training seeds validate on the same images.
VAL_SPLIT_SEED = 20_150_226


def split_indices(count: int, val_size: int) -> tuple[Tensor, Tensor]:
    """Sorted (train, val) indices of the training images; the split's own seed keeps it the same for every run."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    return order[val_size:].sort().values, order[:val_size].sort().values


# `DistributedSampler` shuffles epoch e with the generator seed `seed + e`, so seed 1's first epoch would be seed 0's
# second: runs with "different" seeds would train on the same orders, one epoch apart. Each run seed owns its own
# range of generator seeds instead (seed 0 keeps DistributedSampler's orders).
EPOCHS_PER_SEED = 2**20


def shuffle_seed(seed: int) -> int:
    """The generator seed of epoch 0 of a run seeded `seed`; epoch e uses this plus e."""
    return seed * EPOCHS_PER_SEED


def epoch_order(length: int, seed: int, epoch: int) -> Tensor:
    """The shuffle of one epoch, as `ResumableSampler` draws it: it depends only on (seed, epoch)."""
    return torch.randperm(length, generator=torch.Generator().manual_seed(shuffle_seed(seed) + epoch))


def run_seed() -> int:
    """The run's seed as `seed_everything` (so `--seed_everything`) records it in PL_GLOBAL_SEED; 0 when unseeded."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class ResumableSampler(DistributedSampler):
    """torch's `DistributedSampler` (so Lightning keeps it under DDP) that knows its position in the epoch.

    One process: `world_size=1`, the whole epoch in its shuffled order. Under DDP each rank takes every
    `world_size`-th image of the same order, so the ranks' batches together are the one-process batches.
    """

    def __init__(self, dataset: Dataset, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=shuffle_seed(seed))
        self.position = 0  # images of this rank's share already handed out in the current epoch
        self.resume_at: tuple[int, int] | None = None  # (epoch, position) from a checkpoint, used once

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start = 0
        if self.resume_at is not None and self.resume_at[0] == self.epoch:
            start = min(self.resume_at[1], len(indices))
        self.resume_at = None
        self.position = start
        for index in indices[start:]:
            self.position += 1
            yield index


class EvaluationShare(DistributedSampler):
    """Rank r of W evaluates images r, r + W, r + 2W, ... in order: every image exactly once, whatever W.

    torch's `DistributedSampler` pads the set to a multiple of W by repeating images (10,000 test images on three
    processes would count 10,002); here the shares differ by at most one image, and the metrics, reduced over the
    ranks, are those of the whole set. A `DistributedSampler`, so Lightning keeps it under DDP.
    """

    def __init__(self, dataset: Dataset, *, rank: int, world_size: int) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        self.indices = range(rank, len(dataset), world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position inside the epoch goes into checkpoints and comes back on resume."""

    def layout(self) -> dict[str, int]:
        """What decides which images each step takes; a mid-epoch resume needs it unchanged."""
        sampler = self.sampler
        return {
            "train_images": len(self.dataset),
            "batch_size": int(self.batch_size or 1),
            "processes": int(getattr(sampler, "num_replicas", 1)),
        }

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        if not isinstance(sampler, ResumableSampler):  # e.g. Lightning's sequential sampler for overfit_batches
            return {}
        return {"epoch": int(sampler.epoch), "position": int(sampler.position), "layout": self.layout()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler = self.sampler
        if not state or not isinstance(sampler, ResumableSampler):
            return
        mid_epoch = 0 < state["position"] < sampler.num_samples
        if mid_epoch and state["layout"] != self.layout():
            raise CheckpointError(
                f"The checkpoint was saved in the middle of an epoch whose steps were laid out as {state['layout']};"
                f" this run lays them out as {self.layout()}, so the steps already done cannot be skipped exactly."
                " Resume with the same --data.batch_size, --data.val_size and --trainer.devices/num_nodes, or resume"
                " from an end-of-epoch checkpoint (last.ckpt or a best checkpoint)."
            )
        sampler.resume_at = (state["epoch"], state["position"])
