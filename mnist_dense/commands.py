"""The `mnist-dense` command (`python -m mnist_dense`): the process's settings, then one subcommand.

`fit`, `validate`, `test` and `predict` are LightningCLI's (`mnist_dense.cli`); the others are modules with a
`main(args)` of their own. Errors a user can fix end the process with their one-paragraph message and exit 1; an
interrupted `fit` exits 130 (Ctrl-C) or 143 (SIGTERM), as the shell counts them.
"""

from __future__ import annotations

import importlib
import sys

import torch
from lightning.pytorch.callbacks import Callback

from mnist_dense import runtime
from mnist_dense.callbacks.interrupt import interrupted_exit_code
from mnist_dense.checkpoints import CheckpointError
from mnist_dense.cli import MNISTDenseCLI, UnavailableDeviceError
from mnist_dense.data import MNISTDataError
from mnist_dense.pictures import OwnImagesError

# Subcommands that are not Trainer methods, and the module whose `main(args)` runs each.
OTHER_COMMANDS = {
    "calibrate": "mnist_dense.calibration",
    "export": "mnist_dense.deploy.export",
    "serve": "mnist_dense.deploy.serve",
    "sweep": "mnist_dense.sweep",
}
USER_ERRORS = (MNISTDataError, CheckpointError, OwnImagesError, UnavailableDeviceError)


def main(args: list[str] | None = None, callbacks: list[Callback] | None = None) -> MNISTDenseCLI | None:
    """Run a subcommand; `callbacks` join the Trainer's without entering config.yaml (the sweep's pruning callback).

    Called without `args` it is the command line itself, and applies the process settings of `runtime`.
    """
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in OTHER_COMMANDS:
        importlib.import_module(OTHER_COMMANDS[argv[0]]).main(argv[1:])
        return None
    runtime.set_up(command_line=args is None)
    threads = torch.get_num_threads()
    try:
        return MNISTDenseCLI(args=args, callbacks=callbacks)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except SystemExit:
        code = interrupted_exit_code()  # Lightning exits 1 (Ctrl-C) or 0 (SIGTERM) after an interrupt
        if code is None:
            raise
        raise SystemExit(code) from None
    finally:
        torch.set_num_threads(threads)  # `--threads` was for this command: a Python caller keeps its own
