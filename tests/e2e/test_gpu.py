"""On a GPU: the data lives on the device and a training epoch never makes the host wait for it.

Skipped without CUDA (this project's CI machines have none); run it wherever a GPU is lent.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_dense import MNISTClassifier, MNISTDataModule

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class SyncDebugDuringTraining(L.Callback):
    """torch raises on any host-device synchronization between an epoch's first batch fetch and its last step."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            torch.cuda.set_sync_debug_mode("default")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("max_translate", [0, 2])
def test_a_training_epoch_makes_no_host_sync(tiny_mnist: Path, tmp_path: Path, max_translate: int) -> None:
    dm = MNISTDataModule(str(tiny_mnist), val_size=100, max_translate=max_translate)
    trainer = L.Trainer(
        accelerator="gpu", devices=1, max_epochs=2, callbacks=[SyncDebugDuringTraining()], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    model = MNISTClassifier()
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 32
    assert dm.splits["train"].images.device.type == "cuda"  # moved once, as uint8
    assert dm.splits["train"].images.dtype == torch.uint8
    assert trainer.callback_metrics["train_acc"] > 0.5
