"""`python -m mnist_dense fit|validate|test|predict`: LightningCLI with the tutorial as its defaults."""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger

from mnist_dense.checkpoints import (
    AtomicCheckpointIO,
    CheckpointError,
    LatestAndBestCheckpoint,
    read_checkpoint,
    resolve_last,
)
from mnist_dense.data import MNISTDataError, MNISTDataModule
from mnist_dense.interrupt import SaveOnInterrupt, interrupted_exit_code
from mnist_dense.module import MNISTClassifier
from mnist_dense.pictures import OwnImagesError
from mnist_dense.plots import RunPlots
from mnist_dense.predict import PredictionCSVWriter

DEFAULT_SEED = 0
RUNS_DIR = "runs"
TUTORIAL_EPOCHS = 5

# The data is in memory: worker processes would only add overhead.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
# Lightning 2.6 still calls an API that torch 2.14 deprecates; nothing for users to act on.
warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")


class MNISTDenseCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(LatestAndBestCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch}-val_acc{val_acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
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
        if not config or not config.get("ckpt_path"):
            return
        if config.ckpt_path == "last":
            config.ckpt_path = str(resolve_last(config.trainer.default_root_dir or RUNS_DIR))
        checkpoint = read_checkpoint(config.ckpt_path)
        saved = checkpoint["hyper_parameters"].get("hidden")
        asked, default = config.model.hidden, inspect.signature(MNISTClassifier).parameters["hidden"].default
        if saved is not None and asked not in (saved, default):
            raise CheckpointError(
                f"Checkpoint {config.ckpt_path} holds a network with hidden={saved} units, but --model.hidden"
                f" {asked} was asked for. Drop --model.hidden (the checkpoint's size is used), or drop --ckpt_path"
                " to train a new network of the size you asked for."
            )
        trained = checkpoint.get("datamodule_hyper_parameters", {}).get("normalization", config.data.normalization)
        if subcommand != "fit" and trained != config.data.normalization:
            # Evaluate and predict with the input scaling the checkpoint was trained with.
            print(f"Using normalization {trained!r}, as {config.ckpt_path} was trained with.")
            config.data.normalization = trained

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # leave a user's own CheckpointIO alone
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if config.data.val_size == 0 and config.checkpoint.monitor == "val_acc":
            # No validation set: keep the latest epoch as "best", like the tutorial keeps its final model.
            config.checkpoint.monitor = None
            config.checkpoint.filename = "epoch{epoch}"
        clip = config.trainer.gradient_clip_val
        if clip:
            # Lightning clips only under automatic optimization; the module clips each of its steps.
            config.model.gradient_clip_val, config.trainer.gradient_clip_val = clip, None
        if config.trainer.accumulate_grad_batches not in (None, 1):
            self.parser.error(
                f"--trainer.accumulate_grad_batches={config.trainer.accumulate_grad_batches} is not supported:"
                " each batch gets its own optimizer step, as in the tutorial. Raise --data.batch_size instead."
            )
        if config.trainer.logger in (None, True):
            config.trainer.logger = {
                "class_path": f"{CSVLogger.__module__}.{CSVLogger.__qualname__}",
                "init_args": {"save_dir": config.trainer.default_root_dir or RUNS_DIR, "name": ""},
            }

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit or self.trainer.interrupted:
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        results = self.trainer.test(
            self.model, datamodule=self.datamodule, ckpt_path="best" if best else None, verbose=False
        )
        if self.trainer.is_global_zero and results:
            count = len(self.datamodule.splits["test"][1])
            print(f"Test accuracy: {100 * results[0]['test_acc']:.2f}% on {count:,} images ({best or 'final weights'})")


# Subcommands that are not Trainer methods: each module has its own `main(args)`.
OTHER_COMMANDS = {"export": "mnist_dense.deploy.export", "serve": "mnist_dense.deploy.serve"}


def main(args: list[str] | None = None) -> None:
    args = sys.argv[1:] if args is None else list(args)
    if args and args[0] in OTHER_COMMANDS:
        importlib.import_module(OTHER_COMMANDS[args[0]]).main(args[1:])
        return
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
            parser_kwargs={"description": "The Keras tutorial's MNIST dense network, trained with Lightning."},
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
