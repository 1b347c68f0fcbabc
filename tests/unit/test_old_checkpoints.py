"""Checkpoints written by an earlier version of the package (tests/fixtures) load with their network and weights."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from mnist_dense import MNISTClassifier
from mnist_dense.commands import main
from mnist_dense.model import DenseNet, GlobalPoolConvNet
from tests.conftest import BUNDLED_DATA

FIXTURES = Path(__file__).parents[1] / "fixtures"
SAVED = {"dense_hidden8": (DenseNet, {"hidden": 8}), "global_pool_channels4": (GlobalPoolConvNet, {"channels": 4})}


@pytest.mark.parametrize("name", SAVED)
def test_an_old_checkpoint_loads_its_own_network_and_answers_as_it_did(name: str) -> None:
    kind, init_args = SAVED[name]
    model = MNISTClassifier.load_from_checkpoint(FIXTURES / f"{name}.ckpt", map_location="cpu").eval()
    assert type(model.net) is kind and all(getattr(model.net, k) == v for k, v in init_args.items())
    saved = torch.load(FIXTURES / "logits_of_first_64_test_images.pt", weights_only=True)
    with torch.no_grad():
        assert torch.equal(model(saved["images"]), saved[name])


def test_an_old_checkpoints_calibration_is_kept() -> None:
    model = MNISTClassifier.load_from_checkpoint(FIXTURES / "dense_hidden8.ckpt", map_location="cpu")
    assert model.temperature == pytest.approx(1.3245, abs=1e-4) and model.not_a_digit_threshold < 0


@pytest.mark.parametrize("name", SAVED)
def test_an_old_checkpoint_predicts_through_the_command_line(name: str, tmp_path: Path) -> None:
    main(["predict", "--ckpt_path", str(FIXTURES / f"{name}.ckpt"), "--data.data_dir", str(BUNDLED_DATA),
          "--trainer.limit_predict_batches", "1", "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    rows = list(csv.DictReader(next(tmp_path.rglob("predictions.csv")).open()))
    saved = torch.load(FIXTURES / "logits_of_first_64_test_images.pt", weights_only=True)[name]
    assert [int(row["predicted"]) for row in rows[:64]] == saved.argmax(dim=1).tolist()


def test_an_old_checkpoint_asked_for_another_network_names_both(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["test", "--ckpt_path", str(FIXTURES / "dense_hidden8.ckpt"), "--model.hidden", "16"])
    assert exit_.value.code == 1
    error = capsys.readouterr().err
    assert "DenseNet(hidden=8)" in error and "--model.hidden 16" in error, error
