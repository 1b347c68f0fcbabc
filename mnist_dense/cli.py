"""`fit`, `validate`, `test` and `predict`: LightningCLI with the tutorial as its defaults, and its hooks."""

from __future__ import annotations

import importlib
import os
import sys

import torch
from jsonargparse import Namespace
from jsonargparse.typing import PositiveInt
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger

from mnist_dense import runtime
from mnist_dense.callbacks import KerasProgressBar, KerasSummary, PredictionCSVWriter, RunPlots, SaveOnInterrupt
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
from mnist_dense.constants import TUTORIAL_EPOCHS, TUTORIAL_HIDDEN
from mnist_dense.data import MNISTDataModule
from mnist_dense.data.datamodule import data_argument_problem
from mnist_dense.model import DenseNet, class_path, describe, network_config
from mnist_dense.module import MNISTClassifier, hyperparameter_problem

DEFAULT_SEED = 0

# Accelerator names Lightning accepts, and what each needs on this machine.
DEVICE_ACCELERATORS = {
    "gpu": (CUDAAccelerator, MPSAccelerator),
    "cuda": (CUDAAccelerator,),
    "mps": (MPSAccelerator,),
    "tpu": (XLAAccelerator,),
}


class UnavailableDeviceError(RuntimeError):
    """A Trainer setting this machine cannot honour; the message names the flag and the fix."""


def check_accelerator(accelerator: object) -> None:
    """`--trainer.accelerator gpu` on a machine without one: one sentence instead of Lightning's traceback."""
    name = accelerator.lower() if isinstance(accelerator, str) else None
    if name not in DEVICE_ACCELERATORS or any(kind.is_available() for kind in DEVICE_ACCELERATORS[name]):
        return
    build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", built without CUDA")
    raise UnavailableDeviceError(
        f"--trainer.accelerator {accelerator}: this machine has no {name.upper()} that torch can use ({build})."
        " Drop the flag (auto, the default, takes a GPU when there is one) or pass --trainer.accelerator cpu."
    )


SCRIPT = "mnist-dense"  # pyproject.toml's [project.scripts]
DESCRIPTION = (
    "The Keras tutorial's MNIST dense network, trained with Lightning. Also: `export --ckpt_path CKPT` (ONNX, pt2 or a"
    " static page), `serve --ckpt_path CKPT` (HTTP and a drawing page), `calibrate --ckpt_path CKPT` (calibrated"
    ' probabilities and "not a digit") and `sweep` (an Optuna search of fit\'s settings); each takes --help.'
)


def command_name() -> str:
    """The command as it was typed, for --help: the `mnist-dense` script, or `python -m mnist_dense`."""
    program = os.path.splitext(os.path.basename(sys.argv[0] if sys.argv else ""))[0]
    return SCRIPT if program == SCRIPT else "python -m mnist_dense"


class MNISTDenseCLI(LightningCLI):
    """LightningCLI of `MNISTClassifier` and `MNISTDataModule`, with the tutorial's defaults (5 epochs, seed 0, runs/).

    `callbacks` join the Trainer's without entering config.yaml (the sweep's pruning callback); `run=False` parses
    and builds without running a subcommand, as LightningCLI's own `run` does.
    """

    def __init__(
        self, args: list[str] | None = None, run: bool = True, callbacks: list[Callback] | None = None
    ) -> None:
        super().__init__(
            MNISTClassifier,
            MNISTDataModule,
            seed_everything_default=DEFAULT_SEED,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "max_epochs": TUTORIAL_EPOCHS,
                "default_root_dir": RUNS_DIR,
                "callbacks": [SaveOnInterrupt(command=args), *(callbacks or [])],
            },
            parser_kwargs={"prog": command_name(), "description": DESCRIPTION},
            args=args,
            run=run,
        )

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
        parser.add_argument(
            "--threads",
            type=PositiveInt | None,
            default=None,
            help="CPU threads torch computes with (torch.set_num_threads). Default: OMP_NUM_THREADS where it is set;"
            " else 1 for the dense network (at batch 32 its operations are too small for a second thread, which only"
            " spins: README, Speed) and torch's own count, one a core, for the convolutional ones. The count changes"
            " the rounding, so the run's config.yaml records it: give the same to reproduce its figures.",
        )

    def parse_arguments(self, parser, args) -> None:
        """Check the accelerator; resolve `--ckpt_path last` and check the checkpoint: before any work starts."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand or "", None)
        if config:
            check_accelerator(config.trainer.accelerator)
        if config and config.get("model"):
            m, d = config.model, config.data
            model_problem = hyperparameter_problem(m.net, m.hidden, m.lr, m.lr_schedule, m.non_digit_weight)
            data_problem = data_argument_problem(
                d.batch_size, d.val_size, d.normalization, d.eval_batch_size, d.max_translate, d.non_digits
            )
            for flag, problem in (("model", model_problem), ("data", data_problem)):
                if problem:
                    parser.error(f"--{flag}.{problem}")
        if not config or not config.get("ckpt_path"):
            return
        if config.ckpt_path == "last":
            config.ckpt_path = str(resolve_last(*run_folders(config.trainer)))
        checkpoint = read_checkpoint(config.ckpt_path)
        saved = saved_network(config.ckpt_path, checkpoint)  # another package's class: refused, never imported
        asked = asked_network(config.model)
        if asked is not None and network_config(*asked) != saved:
            flag = (
                f"--model.hidden {asked[1]}" if asked[0] is None else f"--model.net {describe(network_config(*asked))}"
            )
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
        """The package's defaults where the command line leaves them: atomic checkpoint writes, Keras' summary and
        epoch lines, and no validation loop when there is no validation set.

        Each gives way to the user's own: a CheckpointIO plugin, a progress bar or summary callback, the
        `enable_progress_bar`/`enable_model_summary` flags, `--trainer.limit_val_batches`. They are added here, not
        to the config, so that a run's config.yaml reruns with other flags (`--trainer.enable_progress_bar false`).
        """
        config = self._own(self.config_init)
        plugins = config.trainer.plugins
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())
        callbacks = config.trainer.callbacks
        callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if config.trainer.enable_progress_bar is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(KerasProgressBar())
        if config.trainer.enable_model_summary is not False and not any(isinstance(c, ModelSummary) for c in callbacks):
            callbacks.append(KerasSummary())
            kwargs["enable_model_summary"] = False  # ours takes the place of Lightning's default summary
        if self.subcommand in ("fit", None) and config.data.val_size == 0 and config.trainer.limit_val_batches is None:
            kwargs["limit_val_batches"] = 0  # no validation set: no validation loop (and no empty-loader warning)
        return super().instantiate_trainer(plugins=plugins, callbacks=callbacks, **kwargs)

    def before_instantiate_classes(self) -> None:
        config = self._own(self.config)
        if self.subcommand not in ("fit", None):
            runtime.quiet_training_state()
        if config.data.val_size == 0 and config.checkpoint.monitor == "val_acc":
            # No validation set: keep the latest epoch as "best", like the tutorial keeps its final model.
            config.checkpoint.monitor = None
            config.checkpoint.filename = "epoch{epoch}"
        run_folder = {
            "class_path": f"{CSVLogger.__module__}.{CSVLogger.__qualname__}",
            "init_args": {"save_dir": config.trainer.default_root_dir or RUNS_DIR, "name": ""},
        }
        if config.trainer.logger in (None, True):
            config.trainer.logger = run_folder
        elif _is_a(config.trainer.logger, MLFlowLogger):
            # MLflow keeps its runs in its own store, which has no run folder when it is a database (Trainer.log_dir
            # is then None, and LightningCLI's config saving fails on it): the default CSVLogger goes first and gives
            # the run its folder, as without MLflow (config.yaml, pictures, checkpoints, `--ckpt_path last`).
            config.trainer.logger = [run_folder, config.trainer.logger]
        elif isinstance(config.trainer.logger, list):
            share_one_version(config.trainer.logger)

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit or self.trainer.interrupted:
            return
        best = self.config_init.fit.checkpoint.best_model_path  # our best-by-validation callback, whatever else is on
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        if self.trainer.is_global_zero and results:
            count = self.model.test_images
            print(f"Test accuracy: {100 * results[0]['test_acc']:.2f}% on {count:,} images ({best or 'final weights'})")

    def _own(self, config: Namespace) -> Namespace:
        """The subcommand's part of `config`; with `run=False` there is no subcommand and all of it is a fit's."""
        return config[self.subcommand] if self.subcommand else config

    def instantiate_classes(self) -> None:
        """`--threads` first, so that everything is built and run with it; config.yaml records the count used."""
        config = self._own(self.config)
        threads = config.threads or default_threads(config.model)
        if threads:
            torch.set_num_threads(threads)
        config.threads = torch.get_num_threads()
        super().instantiate_classes()


def asked_network(model: Namespace) -> tuple[object, int] | None:
    """`(net, hidden)` as the command line gives them, or None when it leaves the network to the checkpoint."""
    if model.net is None and model.hidden == TUTORIAL_HIDDEN:
        return None
    return model.net, model.hidden


def default_threads(model: Namespace) -> int | None:
    """`--threads` left unset: OMP_NUM_THREADS where set (None: torch reads it), else 1 for the dense network."""
    if "OMP_NUM_THREADS" in os.environ:
        return None
    return 1 if network_config(model.net)["class_path"] == class_path(DenseNet) else None


def _is_a(item: object, kind: type | tuple[type, ...]) -> bool:
    """Whether a class from the config (a class_path Namespace, or an instance) is a `kind`."""
    if isinstance(item, kind):
        return True
    module, _, name = str(getattr(item, "class_path", "")).rpartition(".")
    try:
        return issubclass(getattr(importlib.import_module(module), name), kind)
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


def run_folders(trainer: Namespace) -> list[str]:
    """Where `--ckpt_path last` looks: the root dir, and the first logger's save_dir if it is a CSV or TensorBoard
    logger (Lightning's checkpoints go to its save_dir/name/version_N)."""
    first = trainer.logger[0] if isinstance(trainer.logger, list) and trainer.logger else trainer.logger
    folders, args = [trainer.default_root_dir or RUNS_DIR], getattr(first, "init_args", None)
    if args is not None and args.get("save_dir") and _is_a(first, (CSVLogger, TensorBoardLogger)):
        folders.append(str(args.save_dir))
    return folders


def share_one_version(loggers: list) -> None:
    """CSV beside TensorBoard: loggers writing to the same save_dir/name get one version_N, so one run folder.

    Each would otherwise take the next free version_N on its own, and they land in two folders.
    """
    folders: dict[tuple[str, str], list[Namespace]] = {}
    for logger in loggers:
        args = getattr(logger, "init_args", None)
        if args is not None and args.get("version") is None and _is_a(logger, (CSVLogger, TensorBoardLogger)):
            folders.setdefault((str(args.save_dir), str(args.name)), []).append(args)
    for shared in folders.values():
        if len(shared) > 1:
            version = CSVLogger(shared[0].save_dir, name=shared[0].name).version  # Lightning's rule: the next free
            for args in shared:
                args.version = version
