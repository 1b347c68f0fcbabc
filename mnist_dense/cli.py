"""`python -m mnist_dense fit|validate|test|predict`: LightningCLI with the tutorial as its defaults."""

from __future__ import annotations

import ctypes
import importlib
import inspect
import os
import sys
import warnings

from jsonargparse import Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger

from mnist_dense.callbacks import PredictionCSVWriter, RunPlots, SaveOnInterrupt
from mnist_dense.callbacks.interrupt import interrupted_exit_code
from mnist_dense.checkpoints import (
    LAST_NAME,
    RUNS_DIR,
    AtomicCheckpointIO,
    CheckpointError,
    read_checkpoint,
    resolve_last,
    saved_network,
    trained_normalization,
)
from mnist_dense.constants import TUTORIAL_EPOCHS
from mnist_dense.data import MNISTDataError, MNISTDataModule
from mnist_dense.model import describe, network_spec
from mnist_dense.module import MNISTClassifier, check_network_choice
from mnist_dense.pictures import OwnImagesError

DEFAULT_SEED = 0
DEFAULT_HIDDEN = inspect.signature(MNISTClassifier).parameters["hidden"].default
# Lightning's bar redraws after every step, which costs more than a training step of this network at batch 32
# (measured in `make bench`); 20 steps a redraw is still about 20 redraws a second. Give your own
# `--trainer.callbacks+=TQDMProgressBar --trainer.callbacks.refresh_rate N` to choose otherwise.
PROGRESS_BAR = Namespace(class_path="lightning.pytorch.callbacks.TQDMProgressBar", init_args=Namespace(refresh_rate=20))

# The data is in memory: worker processes would only add overhead.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
# Lightning 2.6 still calls an API that torch 2.14 deprecates; nothing for users to act on.
warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")


class MNISTDenseCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Two stock ModelCheckpoints: the best epoch by validation accuracy (what `fit` tests), and last.ckpt,
        # rewritten at the end of every epoch (with save_last, Lightning rewrites it only when the best improved).
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "epoch{epoch}-val_acc{val_acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(
            {
                "last_checkpoint.filename": LAST_NAME.removesuffix(".ckpt"),
                "last_checkpoint.monitor": None,
                "last_checkpoint.save_top_k": 1,
                "last_checkpoint.save_on_train_epoch_end": True,
                "last_checkpoint.enable_version_counter": False,
            }
        )
        # Always on (also when --trainer.callbacks is given): pictures of each run, predictions.csv for predict.
        parser.add_lightning_class_args(RunPlots, "plots")
        parser.add_lightning_class_args(PredictionCSVWriter, "predictions")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, evaluate the test set once with the best checkpoint (the tutorial's model.evaluate).",
        )

    def parse_arguments(self, parser, args) -> None:
        """Resolve `--ckpt_path last` in the run folder and check the checkpoint before any work starts."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand or "", None)
        if config and config.get("model"):
            try:
                check_network_choice(config.model.net, config.model.hidden)
            except ValueError as err:
                parser.error(f"--model.{err}")
        if not config or not config.get("ckpt_path"):
            return
        if config.ckpt_path == "last":
            config.ckpt_path = str(resolve_last(config.trainer.default_root_dir or RUNS_DIR))
        checkpoint = read_checkpoint(config.ckpt_path)
        saved = saved_network(config.ckpt_path, checkpoint)  # another package's class: refused, never imported
        asked = asked_network(config.model)
        if asked is not None and network_spec(*asked) != saved:
            flag = f"--model.hidden {asked[1]}" if asked[0] is None else f"--model.net {describe(network_spec(*asked))}"
            raise CheckpointError(
                f"Checkpoint {config.ckpt_path} holds a {describe(saved)} network, but {flag} was asked for. Drop"
                " --model.net and --model.hidden (the checkpoint's network is then used), or drop --ckpt_path to train"
                " a new network of the kind you asked for."
            )
        trained = trained_normalization(checkpoint, config.data.normalization)
        if subcommand != "fit" and trained != config.data.normalization:
            # Evaluate and predict with the input scaling the checkpoint was trained with.
            print(f"Using normalization {trained!r}, as {config.ckpt_path} was trained with.")
            config.data.normalization = trained

    def instantiate_trainer(self, **kwargs):
        """Checkpoints are written atomically, unless the user brings a CheckpointIO plugin of their own."""
        plugins = self.config_init[self.subcommand].trainer.plugins
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())
        return super().instantiate_trainer(plugins=plugins, **kwargs)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if config.data.val_size == 0 and config.checkpoint.monitor == "val_acc":
            # No validation set: keep the latest epoch as "best", like the tutorial keeps its final model.
            config.checkpoint.monitor = None
            config.checkpoint.filename = "epoch{epoch}"
        callbacks = config.trainer.callbacks or []
        if config.trainer.enable_progress_bar is not False and not any(_is_progress_bar(c) for c in callbacks):
            config.trainer.callbacks = [*callbacks, PROGRESS_BAR]
        if config.trainer.logger in (None, True):
            config.trainer.logger = {
                "class_path": f"{CSVLogger.__module__}.{CSVLogger.__qualname__}",
                "init_args": {"save_dir": config.trainer.default_root_dir or RUNS_DIR, "name": ""},
            }

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit or self.trainer.interrupted:
            return
        best = self.config_init.fit.checkpoint.best_model_path  # our best-by-validation callback, whatever else is on
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        if self.trainer.is_global_zero and results:
            count = self.model.test_images
            print(f"Test accuracy: {100 * results[0]['test_acc']:.2f}% on {count:,} images ({best or 'final weights'})")


# Subcommands that are not Trainer methods: each module has its own `main(args)`.
OTHER_COMMANDS = {"export": "mnist_dense.deploy.export", "serve": "mnist_dense.deploy.serve"}


def asked_network(model: Namespace) -> tuple[object, int] | None:
    """`(net, hidden)` as the command line gives them, or None when it leaves the network to the checkpoint."""
    if model.net is None and model.hidden == DEFAULT_HIDDEN:
        return None
    return model.net, model.hidden


def _is_progress_bar(callback: object) -> bool:
    """A callback from the config (a class_path Namespace, or an instance) that draws a progress bar."""
    if isinstance(callback, ProgressBar):
        return True
    module, _, name = str(getattr(callback, "class_path", "")).rpartition(".")
    try:
        return issubclass(getattr(importlib.import_module(module), name), ProgressBar)
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


def skip_failing_nvml_check() -> None:
    """Leave Lightning's `PYTORCH_NVML_BASED_CUDA_CHECK=1` only where NVML can answer it.

    `import lightning` sets it so that `torch.cuda.is_available()` asks NVML instead of initializing CUDA, and
    torch 2.14's optimizers call that every step. Where no NVML library is installed (a CUDA build of torch on a
    machine without an NVIDIA driver, like pip's default torch on a CPU machine) each call fails to load it and then
    asks `cudaGetDeviceCount` anyway: the same answer, 0.15-0.3 ms later every step (`benchmarks/step_costs.py`).
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in OTHER_COMMANDS:
        importlib.import_module(OTHER_COMMANDS[argv[0]]).main(argv[1:])
        return
    skip_failing_nvml_check()
    try:
        MNISTDenseCLI(
            MNISTClassifier,
            MNISTDataModule,
            seed_everything_default=DEFAULT_SEED,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "max_epochs": TUTORIAL_EPOCHS,
                "default_root_dir": RUNS_DIR,
                "callbacks": [SaveOnInterrupt()],
            },
            parser_kwargs={
                "description": "The Keras tutorial's MNIST dense network, trained with Lightning. Also:"
                " `export --ckpt_path CKPT` (ONNX or pt2) and `serve --ckpt_path CKPT` (HTTP and a drawing page);"
                " each takes --help."
            },
            args=args,
        )
    except (MNISTDataError, CheckpointError, OwnImagesError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except SystemExit:
        code = interrupted_exit_code()  # Lightning exits 1 (Ctrl-C) or 0 (SIGTERM) after an interrupt
        if code is None:
            raise
        raise SystemExit(code) from None
