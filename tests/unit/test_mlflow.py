"""MLflow beside the run folder: `--trainer.logger MLFlowLogger` on a database store, read back with MLflow's client.

The run keeps its folder (a CSVLogger goes first), and MLflow holds the hyperparameters, every epoch's metrics, the
run's pictures and the final checkpoint, as TensorBoard holds its scalars and images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_dense.checkpoints import read_checkpoint
from tests.tiny_runs import logged, train_tiny
from tests.unit.test_plots import WEAK_FIT

mlflow = pytest.importorskip("mlflow", reason="MLflow comes with the `tracking` extra: pip install -e '.[tracking]'")

PICTURES = ("training_curves", "confusion_matrix", "misclassified")


def test_mlflow_holds_the_hyperparameters_every_epoch_the_pictures_and_the_final_checkpoint(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's artifacts go to ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = ["--trainer.logger", "MLFlowLogger", "--trainer.logger.tracking_uri", uri]
    tracker += ["--trainer.logger.experiment_name", "mnist", "--trainer.logger.log_model", "true"]
    train_tiny(tiny_mnist, tmp_path / "runs", *WEAK_FIT, "--model.hidden", "64", *tracker)

    folder = tmp_path / "runs" / "version_0"  # the run's folder, as without MLflow
    for name in ["metrics.csv", "config.yaml", "checkpoints/last.ckpt", *(f"{p}.png" for p in PICTURES)]:
        assert (folder / name).is_file(), name

    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["hidden"] == "64" and run.data.params["lr"] == "0.001"
    assert run.data.params["normalization"] == "standard" and run.data.params["val_size"] == "100"
    for name in ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(logged(folder, name))
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 2  # one per epoch

    for picture in PICTURES:
        shown = Image.open(client.download_artifacts(run.info.run_id, f"{picture}.png", str(tmp_path)))
        assert shown.size == Image.open(folder / f"{picture}.png").size
        assert torch.tensor(list(shown.convert("L").getdata()), dtype=torch.float).std() > 10  # not blank
    logged_checkpoint = read_checkpoint(client.download_artifacts(run.info.run_id, "last/last.ckpt", str(tmp_path)))
    final = read_checkpoint(folder / "checkpoints" / "last.ckpt")
    assert logged_checkpoint["global_step"] == final["global_step"] == 4
    for name, weights in final["state_dict"].items():
        assert torch.equal(weights, logged_checkpoint["state_dict"][name])
