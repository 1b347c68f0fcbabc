"""Everything downstream of `fit` works for a convolutional checkpoint: export (ONNX and pt2), predict, serve."""

from __future__ import annotations

import base64
import csv
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from litserve.utils import wrap_litserve_start
from torchvision.io import write_jpeg

from mnist_dense.commands import main
from mnist_dense.deploy.digit_api import build_server
from mnist_dense.deploy.export import export
from mnist_dense.deploy.inference import load_inference_model
from mnist_dense.model import GlobalPoolConvNet
from mnist_dense.pictures import prepare_picture
from mnist_dense.show import draw_on_paper
from tests.conftest import BUNDLED_DATA
from tests.e2e.deploy.test_serve_api import wait_until_healthy


def test_the_checkpoint_holds_the_global_pool_conv_net(trained_conv_checkpoint: Path, mnist_test) -> None:
    model = load_inference_model(trained_conv_checkpoint)
    assert isinstance(model.net, GlobalPoolConvNet)
    images, labels = mnist_test
    with torch.inference_mode():
        right = (model(images[:1000, None].float()).argmax(dim=1) == labels[:1000]).float().mean()
    assert right > 0.7  # 300 steps: well past chance (0.1)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_agrees_with_pytorch_on_every_test_digit(fmt: str, trained_conv_checkpoint: Path, tmp_path: Path):
    check = export(trained_conv_checkpoint, tmp_path / f"conv.{fmt}", fmt, str(BUNDLED_DATA))
    assert check.images == 10_000 and check.disagreements == 0 and check.max_difference < 1e-4
    assert check.accuracy == check.torch_accuracy > 0.7
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"conv.{fmt}"]


def test_predict_serve_and_the_network_agree_on_digits_drawn_on_paper(
    trained_conv_checkpoint: Path, mnist_test, tmp_path: Path
) -> None:
    """Test digits drawn large, dark and off centre: `predict --data.predict_images`, a `serve` request and the
    network on the prepared picture give the same digit."""
    images, labels = mnist_test
    folder = tmp_path / "paper"
    folder.mkdir()
    for i in range(20):
        write_jpeg(draw_on_paper(images[i], i), str(folder / f"{i:02d}.jpg"), quality=90)
    main(["predict", "--ckpt_path", str(trained_conv_checkpoint), "--data.predict_images", str(folder),
          "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false"])  # fmt: skip
    with open(next((tmp_path / "run").glob("version_*/predictions.csv"))) as f:
        predicted = {Path(row["image"]).name: int(row["predicted"]) for row in csv.DictReader(f)}
    model = load_inference_model(trained_conv_checkpoint)
    server = build_server(trained_conv_checkpoint, max_batch_size=4, batch_timeout=0.005)
    with wrap_litserve_start(server) as started, TestClient(started.app) as client:
        wait_until_healthy(client)
        for name, digit in predicted.items():
            picture = (folder / name).read_bytes()
            with torch.inference_mode():
                expected = int(model(prepare_picture(picture)[None, None].float()).argmax())
            answer = client.post("/predict", json={"image": base64.b64encode(picture).decode()})
            assert answer.status_code == 200 and answer.json()["digit"] == digit == expected, name
    assert sum(digit == int(labels[int(name[:2])]) for name, digit in predicted.items()) >= 12  # of 20
