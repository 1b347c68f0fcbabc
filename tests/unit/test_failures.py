"""Every bad input through the real command line: one clear paragraph, a non-zero exit, nothing lost.

`main()` runs in this process so that the tiny data fixture applies; tests/unit/test_cli.py checks the
same exit path in a subprocess on the bundled MNIST.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_dense.checkpoints import CheckpointError
from mnist_dense.commands import main
from mnist_dense.data import MNISTDataModule
from mnist_dense.data import files as data
from mnist_dense.module import MNISTClassifier

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def earlier_run(tiny_mnist: Path, tmp_path: Path) -> Path:
    """A finished run (hidden=64) in tmp_path/run: its files must survive every failure below."""
    root = tmp_path / "run"
    main(["fit", *tiny_args(tiny_mnist, root), "--model.hidden", "64"])
    return root


def tiny_args(tiny_mnist: Path, root: Path) -> list[str]:
    return [
        "--data.data_dir",
        str(tiny_mnist),
        "--data.val_size",
        "100",
        "--trainer.max_epochs",
        "1",
        "--trainer.default_root_dir",
        str(root),
        "--test_after_fit",
        "false",
        *QUIET,
    ]


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fails(args: list[str], capsys: pytest.CaptureFixture, code: int = 1) -> str:
    """Run the CLI, expect it to exit with `code`, return what it printed to stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == code
    return capsys.readouterr().err


def one_paragraph(err: str) -> str:
    message = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and "Traceback" not in err, err
    return message[0]


# --- checkpoints ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"PK\x03\x04 not really a zip" * 10, "is corrupt"),
        ("half", "is corrupt"),
        ("not-a-checkpoint", "missing state_dict"),
    ],
    ids=["missing", "empty", "garbage", "truncated", "plain-torch-file"],
)
@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_bad_checkpoint_is_named_and_nothing_is_touched(
    content, expected: str, subcommand: str, earlier_run: Path, tiny_mnist: Path, capsys: pytest.CaptureFixture
) -> None:
    good = earlier_run / "version_0" / "checkpoints" / "last.ckpt"
    bad = earlier_run.parent / "bad.ckpt"
    if content == "half":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif content == "not-a-checkpoint":
        torch.save({"weights": torch.zeros(3)}, bad)
    elif content is not None:
        bad.write_bytes(content)
    before = snapshot(earlier_run)
    capsys.readouterr()
    err = fails([subcommand, *tiny_args(tiny_mnist, earlier_run), "--ckpt_path", str(bad)], capsys)
    message = one_paragraph(err)
    assert str(bad) in message and expected in message and "--ckpt_path" in message
    assert snapshot(earlier_run) == before  # refused before any work: no new version folder either


def test_ckpt_path_last_without_a_checkpoint_says_so(tiny_mnist: Path, tmp_path: Path, capsys) -> None:
    err = fails(["fit", *tiny_args(tiny_mnist, tmp_path / "fresh"), "--ckpt_path", "last"], capsys)
    assert "nothing to resume" in one_paragraph(err) and str(tmp_path / "fresh") in err
    assert not (tmp_path / "fresh").exists()  # it did not quietly start a new run


def test_other_hidden_size_is_refused_naming_both(earlier_run: Path, tiny_mnist: Path, capsys) -> None:
    ckpt = earlier_run / "version_0" / "checkpoints" / "last.ckpt"
    before = snapshot(earlier_run)
    capsys.readouterr()
    args = [*tiny_args(tiny_mnist, earlier_run), "--ckpt_path", str(ckpt), "--model.hidden", "32"]
    message = one_paragraph(fails(["fit", *args], capsys))
    assert str(ckpt) in message and "hidden=64" in message and "--model.hidden 32" in message
    assert snapshot(earlier_run) == before


def test_checkpoint_hyperparameters_rebuild_the_right_model(earlier_run: Path, tiny_mnist: Path, capsys) -> None:
    ckpt = earlier_run / "version_0" / "checkpoints" / "last.ckpt"
    model = MNISTClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    assert model.hparams.hidden == 64 and model.net.layers[1].weight.shape == (64, 784)
    main(["validate", *tiny_args(tiny_mnist, earlier_run / "validate"), "--ckpt_path", str(ckpt)])  # default hidden
    assert "val_acc" in capsys.readouterr().out


def test_weights_of_another_size_in_python_name_both_sizes(earlier_run: Path, tiny_mnist: Path) -> None:
    ckpt = earlier_run / "version_0" / "checkpoints" / "last.ckpt"
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(CheckpointError) as refused:
        trainer.validate(MNISTClassifier(hidden=32), MNISTDataModule(str(tiny_mnist), val_size=100), ckpt_path=ckpt)
    assert str(refused.value) == (
        f"Checkpoint {ckpt} holds a DenseNet(hidden=64) network, but the model built here is a DenseNet(hidden=32)"
        " (net.layers.1.weight: (64, 784) vs (32, 784)). Drop --model.net and --model.hidden (the checkpoint's"
        " network is then used), or build the model with the checkpoint's network"
        " (MNISTClassifier.load_from_checkpoint does it)."
    )


# --- data files -------------------------------------------------------------------------------------


def _truncate(raw: Path) -> Path:
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    return path


def _empty(raw: Path) -> Path:
    path = raw / "train-labels-idx1-ubyte"
    path.write_bytes(b"")
    return path


def _labels_for_images(raw: Path) -> Path:
    shutil.copy(raw / "train-labels-idx1-ubyte", raw / "train-images-idx3-ubyte")
    return raw / "train-images-idx3-ubyte"


def _wrong_magic(raw: Path) -> Path:
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes((1234).to_bytes(4, "big") + path.read_bytes()[4:])
    return path


def _label_out_of_range(raw: Path) -> Path:
    path = raw / "train-labels-idx1-ubyte"
    content = bytearray(path.read_bytes())
    content[8 + 3] = 11
    path.write_bytes(bytes(content))
    return path


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_truncate, "truncated"),
        (_empty, "empty"),
        (_labels_for_images, "swapped"),
        (_wrong_magic, "magic number 1234"),
        (_label_out_of_range, "outside 0-9"),
    ],
)
def test_bad_data_file_is_named_and_the_earlier_run_is_untouched(
    damage, expected: str, earlier_run: Path, tiny_mnist: Path, capsys: pytest.CaptureFixture
) -> None:
    data.ensure_mnist_files(tiny_mnist)
    path = damage(data.raw_folder(tiny_mnist))
    before = snapshot(earlier_run)
    capsys.readouterr()
    message = one_paragraph(fails(["fit", *tiny_args(tiny_mnist, earlier_run)], capsys))
    assert str(path) in message and expected in message and "data/MNIST/raw" in message
    assert {p: b for p, b in snapshot(earlier_run).items() if p in before} == before


@pytest.mark.usefixtures("data_folder_read_only")
def test_unwritable_data_folder_is_named(tiny_mnist: Path, tmp_path: Path, capsys) -> None:
    message = one_paragraph(fails(["fit", *tiny_args(tiny_mnist, tmp_path / "run")], capsys))
    assert str(data.raw_folder(tiny_mnist)) in message and "writable" in message


# --- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("model:\n  hiden: 64\n", "hiden"),
        ("trainer:\n  max_epoch: 3\n", "max_epoch"),
        ("data:\n  batch_size: big\n", "batch_size"),
        ("model:\n  lr: -0.1\n", "lr"),
        ("data:\n  val_size: 70000\n", "val_size"),
    ],
    ids=["unknown-model-key", "unknown-trainer-key", "wrong-type", "negative-lr", "val-size-too-big"],
)
def test_bad_config_is_refused_before_any_work(yaml_text: str, key: str, tiny_mnist: Path, tmp_path: Path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml_text)
    err = fails(["fit", *tiny_args(tiny_mnist, tmp_path / "run"), "--config", str(config)], capsys, code=2)
    assert key in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
