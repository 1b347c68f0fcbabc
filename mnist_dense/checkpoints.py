"""Checkpoints that are never half-written, found by `--ckpt_path last`, and checked before use.

Lightning writes a checkpoint through a temporary file in $TMPDIR and moves it, which is atomic only
when that is the checkpoint's own filesystem. Here it is written as every file of the package is (`atomic`):
beside its final name, flushed to disk and renamed into place, so a process killed while saving leaves the
previous checkpoint whole.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from mnist_dense.atomic import write_atomically
from mnist_dense.constants import TUTORIAL_HIDDEN
from mnist_dense.model import class_path, describe, known_networks, network_class, network_config

# Where runs go by default (`--trainer.default_root_dir`), and so where `--ckpt_path last` looks.
RUNS_DIR = "runs"
# Files that `--ckpt_path last` resumes from: the end of the latest epoch, or where an interrupt stopped.
LAST_NAME, INTERRUPTED_NAME = "last.ckpt", "interrupted.ckpt"
REQUIRED_KEYS = ("state_dict", "hyper_parameters", "epoch", "global_step", "loops")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` into memory, then `atomic.write_atomically`: beside the target, fsync, rename onto it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options.")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialize first: a failure here touches no file
        write_atomically(path, buffer.getvalue())


def find_latest_checkpoint(*roots: str | Path) -> Path | None:
    """The newest last.ckpt or interrupted.ckpt anywhere under the run folders (each run has its version_N)."""
    names = (LAST_NAME, INTERRUPTED_NAME)
    found = [p for root in roots for name in names for p in Path(root).rglob(name) if p.is_file()]
    return max(found, key=lambda p: (p.stat().st_mtime_ns, str(p)), default=None)


def resolve_last(*roots: str | Path) -> Path:
    """`--ckpt_path last` for run folders: their newest checkpoint, or a clear error instead of starting over."""
    latest = find_latest_checkpoint(*roots)
    if latest is None:
        searched = " or ".join(str(Path(root).resolve()) for root in dict.fromkeys(roots))
        raise CheckpointError(
            f"--ckpt_path last: no {LAST_NAME} or {INTERRUPTED_NAME} under {searched}, so there is"
            " nothing to resume. Check --trainer.default_root_dir or your logger's save_dir (where you trained), give a"
            " checkpoint file with --ckpt_path PATH, or drop --ckpt_path to start a new run."
        )
    return latest


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU, or raise `CheckpointError` saying what is wrong with which file."""
    path = Path(path)
    fix = "Give another checkpoint with --ckpt_path (for example the run's last.ckpt), or drop --ckpt_path."
    if not path.exists():
        raise CheckpointError(f"Checkpoint {path} does not exist. {fix}")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} is not a file. {fix}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"Checkpoint {path} is empty (0 bytes): it was never written completely. {fix}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"Checkpoint {path} is corrupt or not a Lightning checkpoint ({detail}). {fix}") from err
    missing = [key for key in REQUIRED_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"Checkpoint {path} is not a checkpoint of this package's training (missing {', '.join(missing)}). {fix}"
        )
    return checkpoint


def trained_normalization(checkpoint: dict[str, Any], default: str) -> str:
    """The input normalization the checkpoint's data module trained with (`default` if it saved none)."""
    return checkpoint.get("datamodule_hyper_parameters", {}).get("normalization", default)


def trained_eval_batch_size(checkpoint: dict[str, Any], default: int) -> int:
    """The batch size the checkpoint's run evaluated in (`default` if it saved none): the conv configs choose theirs."""
    return int(checkpoint.get("datamodule_hyper_parameters", {}).get("eval_batch_size", default))


def peek_checkpoint(source: str | os.PathLike | IO) -> dict[str, Any]:
    """A checkpoint read as `read_checkpoint` reads it, from a path, a URL or an open file (left where it was)."""
    if hasattr(source, "read"):
        position = source.tell()
        checkpoint = torch.load(source, map_location="cpu", weights_only=True)
        source.seek(position)
        return checkpoint
    if "://" in str(source):
        import fsspec

        with fsspec.open(str(source), "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    return read_checkpoint(source)


def saved_network(path: str | os.PathLike | IO | None, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The `network_config` of the network a checkpoint's hyperparameters name; a class of another package is refused.

    Checked on the class path alone: a checkpoint naming another class (which Lightning's loader would import and
    build) stops here, and nothing of it is imported.
    """
    hparams = checkpoint.get("hyper_parameters") or {}
    net = hparams.get("net")
    if net is not None and network_class(net) is None:
        raise CheckpointError(
            f"{_which(path)} names the network {class_path(net)!r}, which is not"
            f" one of this package's networks ({known_networks()}); it was not imported. Give a checkpoint of"
            " `python -m mnist_dense fit` with --ckpt_path (or load one you trust with that class's own code)."
        )
    return network_config(net, hparams.get("hidden", TUTORIAL_HIDDEN))


def check_network(
    path: str | Path | None, checkpoint: dict[str, Any], built: nn.Module, expected: dict[str, torch.Tensor]
) -> None:
    """Refuse weights of another network or size with both named, instead of load_state_dict's key or shape error.

    `built` is the network the weights go into, `expected` the state dict of the model around it.
    """
    saved = checkpoint["state_dict"]
    differences = [
        f"{name}: {tuple(saved[name].shape)} vs {tuple(expected[name].shape)}"
        for name in saved
        if name in expected and tuple(saved[name].shape) != tuple(expected[name].shape)
    ]
    differences += [f"{name} is not in the checkpoint" for name in expected if name not in saved]
    differences += [f"{name} is not in the model" for name in saved if name not in expected]
    if differences:
        raise CheckpointError(
            f"{_which(path)} holds a {describe(saved_network(path, checkpoint))} network, but the model built here is a"
            f" {describe(network_config(built))} ({differences[0]}). Drop --model.net and --model.hidden (the"
            " checkpoint's network is then used), or build the model with the checkpoint's network"
            " (MNISTClassifier.load_from_checkpoint does it)."
        )


def _which(path: object) -> str:
    """How a message names the checkpoint: its path, when there is one."""
    return f"Checkpoint {path}" if path else "The checkpoint"
