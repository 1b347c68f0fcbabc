"""Checkpoints that are never half-written, found by `--ckpt_path last`, and checked before use.

Lightning writes a checkpoint through a temporary file in $TMPDIR and moves it, which is atomic only
when that is the checkpoint's own filesystem. Here the file is written beside its final name, flushed
to disk and renamed into place: a process killed while saving leaves the previous checkpoint whole.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

# Where runs go by default (`--trainer.default_root_dir`), and so where `--ckpt_path last` looks.
RUNS_DIR = "runs"
# Files that `--ckpt_path last` resumes from: the end of the latest epoch, or where an interrupt stopped.
LAST_NAME, INTERRUPTED_NAME = "last.ckpt", "interrupted.ckpt"
REQUIRED_KEYS = ("state_dict", "hyper_parameters", "epoch", "global_step", "loops")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the fix."""


def partial_path(path: Path) -> Path:
    """The hidden file a checkpoint is written to before it is renamed into place."""
    return path.with_name(f".{path.name}.partial")


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` to `.<name>.partial` beside the target, fsync, then `os.replace` onto the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options.")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialize first: a failure here touches no file
        partial = partial_path(target)
        try:
            with open(partial, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


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


def check_state_shapes(path: str | Path | None, saved: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Refuse weights of another size with the sizes named, instead of load_state_dict's shape error."""
    expected = model.state_dict()
    for name, tensor in saved.items():
        if name in expected and tuple(expected[name].shape) != tuple(tensor.shape):
            hidden_saved, hidden_model = _hidden(saved), _hidden(expected)
            which = f"Checkpoint {path}" if path else "The checkpoint"
            raise CheckpointError(
                f"{which} holds a network with hidden={hidden_saved} units, but the model built"
                f" here has hidden={hidden_model} ({name}: {tuple(tensor.shape)} vs {tuple(expected[name].shape)})."
                f" Drop --model.hidden (the checkpoint's size is then used) or pass --model.hidden {hidden_saved}."
            )


def _hidden(state: dict[str, torch.Tensor]) -> int | str:
    """The hidden width of a DenseNet state dict: rows of its first Linear layer's weight."""
    weights = [t for name, t in state.items() if name.endswith("weight") and t.dim() == 2]
    return int(weights[0].shape[0]) if weights else "?"
