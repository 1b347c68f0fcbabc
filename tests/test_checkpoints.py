"""Checkpoints survive library use: load, train on with a plain Trainer, save, and load again, in Python and the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_dense import MNISTClassifier, MNISTDataModule
from mnist_dense.cli import main
from tests.conftest import cpu_trainer

PLAIN = (bool, int, float, str, type(None))


def written_by_the_cli(data: Path, root: Path) -> Path:
    main(["fit", "--data.data_dir", str(data), "--data.val_size", "100", "--trainer.max_epochs", "1",
          "--model.hidden", "32", "--model.lr", "0.002", "--test_after_fit", "false", "--plots.enabled", "false",
          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root)])  # fmt: skip
    return root / "version_0" / "checkpoints" / "last.ckpt"


def written_by_a_script(data: Path, root: Path) -> Path:
    trainer = cpu_trainer(root, max_steps=5)
    trainer.fit(MNISTClassifier(hidden=32, lr=0.002), datamodule=MNISTDataModule(str(data), val_size=100))
    trainer.save_checkpoint(root / "script.ckpt")
    return root / "script.ckpt"


@pytest.mark.parametrize("write", [written_by_the_cli, written_by_a_script], ids=["cli", "script"])
def test_load_train_save_and_load_again_in_python_and_through_test_ckpt_path(
    write, tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first = write(tiny_mnist, tmp_path / "first")
    model = MNISTClassifier.load_from_checkpoint(first, map_location="cpu")
    assert model.hparams.hidden == 32 and model.hparams.lr == 0.002
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=MNISTDataModule(str(tiny_mnist), val_size=100))
    again = tmp_path / "again.ckpt"
    trainer.save_checkpoint(again)

    checkpoint = torch.load(again, map_location="cpu", weights_only=True)  # what torch >= 2.6 does by default
    for name in ("hyper_parameters", "datamodule_hyper_parameters"):
        kinds = {key: type(value) for key, value in checkpoint[name].items()}
        assert all(kind in PLAIN for kind in kinds.values()), kinds  # no jsonargparse PositiveInt/PositiveFloat
    reloaded = MNISTClassifier.load_from_checkpoint(again, map_location="cpu", weights_only=True)
    assert reloaded.hparams.hidden == 32 and reloaded.hparams.lr == 0.002
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name  # the weights it was trained on to

    capsys.readouterr()
    main(["test", "--ckpt_path", str(again), "--data.data_dir", str(tiny_mnist), "--trainer.enable_progress_bar",
          "false", "--plots.enabled", "false", "--trainer.default_root_dir", str(tmp_path / "test")])  # fmt: skip
    assert re.search(r"test_acc\W+[01]\.\d+", capsys.readouterr().out)  # it ran the test set


def test_nonsense_hyperparameters_are_still_refused_at_parse_time(capsys: pytest.CaptureFixture) -> None:
    """Plain values in checkpoints, and the typed `__init__` still rejects bad values before anything runs."""
    for flag, value in (("--model.hidden", "-3"), ("--model.lr", "0"), ("--data.batch_size", "0")):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", flag, value])
        assert exit_info.value.code == 2 and flag.removeprefix("--") in capsys.readouterr().err
