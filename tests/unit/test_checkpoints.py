"""Checkpoints survive library use: load, train on with a plain Trainer, save, and load again, in Python and the CLI."""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_dense import MNISTClassifier, MNISTDataModule
from mnist_dense.checkpoints import CheckpointError, find_latest_checkpoint, peek_checkpoint, trained_normalization
from mnist_dense.commands import main
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


def test_the_normalization_of_a_checkpoint_that_saved_none_is_the_default() -> None:
    assert trained_normalization({}, "unit") == "unit"
    assert trained_normalization({"datamodule_hyper_parameters": {}}, "standard") == "standard"
    assert trained_normalization({"datamodule_hyper_parameters": {"normalization": "standard"}}, "unit") == "standard"


def test_of_two_checkpoints_written_in_the_same_instant_the_later_folder_wins(tmp_path: Path) -> None:
    paths = [tmp_path / f"version_{n}" / "checkpoints" / "last.ckpt" for n in (1, 0)]
    for path in paths:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    assert find_latest_checkpoint(tmp_path) == paths[0]


class RunsCode:
    """A pickled object that runs code when it is loaded: what a checkpoint from a stranger may hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_is_read_the_same_from_a_path_a_url_and_an_open_file_and_never_runs_its_code(
    tmp_path: Path,
) -> None:
    plain, hostile, marker = tmp_path / "plain.ckpt", tmp_path / "hostile.ckpt", tmp_path / "code-ran"
    keys = {"hyper_parameters": {}, "global_step": 7, "loops": {}}  # what read_checkpoint asks of a path
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "epoch": 2, **keys}, plain)
    torch.save({"state_dict": {}, "epoch": 2, **keys, "payload": RunsCode(marker)}, hostile)
    for source in (plain, f"file://{plain}", io.BytesIO(plain.read_bytes())):
        checkpoint = peek_checkpoint(source)
        assert checkpoint["epoch"] == 2 and torch.equal(checkpoint["state_dict"]["w"], torch.arange(3.0))
    opened = io.BytesIO(b"ahead" + plain.read_bytes())
    opened.seek(5)
    peek_checkpoint(opened)
    assert opened.tell() == 5  # an open file is left where it was
    with pytest.raises(CheckpointError):
        peek_checkpoint(hostile)
    for source in (f"file://{hostile}", io.BytesIO(hostile.read_bytes())):
        with pytest.raises(pickle.UnpicklingError):
            peek_checkpoint(source)
    assert not marker.exists()
