"""Ctrl-C and SIGTERM during `fit`: finish the current step, save `interrupted.ckpt`, say how to resume.

Lightning already stops after the step in progress on SIGTERM (its `SIGTERMException`, raised by every
process together under DDP); the first Ctrl-C is made to do the same, so the checkpoint holds whole
steps. Under DDP a SIGTERM to any one process (one node's, say) stops them all: its handler only takes note, and
after each step the ranks decide together (`Strategy.reduce_boolean_decision`); Lightning's own handler
broadcasts from rank 0 inside the signal handler, which hangs every rank when the signal reached another.
The training DataLoader's position inside the epoch is saved with it (`data.sampling`), so the
resumed run skips exactly the batches already trained and ends with the weights of the run left alone.
A second Ctrl-C stops at once.
"""

from __future__ import annotations

import shlex
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_dense.checkpoints import INTERRUPTED_NAME
from mnist_dense.stopping import exit_status, handled

# The signal that interrupted this process's fit, if any; `main()` turns it into the exit status 128 + signal.
received: signal.Signals | None = None


def interrupted_exit_code() -> int | None:
    """130 after Ctrl-C, 143 after SIGTERM (`stopping.exit_status`), None when fit was not interrupted."""
    return exit_status(received) if received is not None else None


def resume_command(ckpt_path: str | Path, argv: list[str] | None = None) -> str:
    """The command line that was run, with its --ckpt_path replaced by the interrupted checkpoint."""
    args, kept = list(sys.argv[1:] if argv is None else argv), []
    while args:
        arg = args.pop(0)
        if arg == "--ckpt_path":
            args = args[1:]
        elif not arg.startswith("--ckpt_path="):
            kept.append(arg)
    return shlex.join(["python", "-m", "mnist_dense", *kept, "--ckpt_path", str(ckpt_path)])


class SaveOnInterrupt(Callback):
    """Saves `interrupted.ckpt` in the run's checkpoint folder on Ctrl-C or SIGTERM (rank 0 writes).

    Not Lightning's `OnExceptionCheckpoint`: with one present, a `fit` without `--ckpt_path` silently
    resumes from its file; here resuming is always asked for. `command` is the command line the resume line repeats
    (None: this process's own), so that a fit run from Python (a sweep's trial) names its own flags.
    """

    def __init__(self, command: list[str] | None = None) -> None:
        global received
        received = None
        self.command = command
        self.ckpt_path = INTERRUPTED_NAME
        self._stop_requested = False
        self._sigterm_noted = False
        self._handlers = ExitStack()  # this callback's signal handlers while training; the previous ones after

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_requested = False
        folder = (trainer.checkpoint_callback and trainer.checkpoint_callback.dirpath) or trainer.default_root_dir
        self.ckpt_path = str(Path(folder) / INTERRUPTED_NAME)
        self._handlers.enter_context(handled(self._on_sigint, (signal.SIGINT,)))
        self._sigterm_noted = False
        if trainer.world_size > 1:
            self._handlers.enter_context(handled(self._on_sigterm, (signal.SIGTERM,)))
        rank_zero_info(f"Ctrl-C or SIGTERM stops after the current step and saves {self.ckpt_path} to resume from.")

    @property
    def stop_requested(self) -> bool:
        """True once Ctrl-C asked training to stop after the step in progress."""
        return self._stop_requested

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again stops at once).", flush=True)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._sigterm_noted = True  # no collective here: the other ranks are in the middle of their own step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(self._sigterm_noted, all=False):
            raise SIGTERMException

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        global received
        if isinstance(exception, KeyboardInterrupt):
            received = signal.SIGINT
        elif isinstance(exception, SIGTERMException):
            received = signal.SIGTERM
        else:
            return  # a bug or bad input: nothing worth resuming from, and the error says what to fix
        if trainer.state.fn != "fit" or trainer.lightning_module is None:
            return
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # every rank joins; the strategy lets rank 0 write
        rank_zero_info(
            f"\n{received.name}: training stopped at epoch {trainer.current_epoch}, step {trainer.global_step};"
            f" saved {self.ckpt_path}.\nResume with:\n  {resume_command(self.ckpt_path, self.command)}"
        )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._handlers.close()
