"""The network and the LightningModule: the tutorial's shape and start, Keras' accuracy, losses over whole epochs."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from mnist_dense import DenseNet, MNISTClassifier, MNISTDataModule
from tests.conftest import BUNDLED_DATA, cpu_trainer


def test_dense_net_has_the_tutorials_layers_and_101770_parameters() -> None:
    net = DenseNet()
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 101_770
    assert [type(m).__name__ for m in net.layers] == ["Flatten", "Linear", "ReLU", "Linear"]
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)


def test_weights_start_as_keras_dense_starts_them() -> None:
    """Glorot-uniform weights (variance 2 / (fan_in + fan_out)) and zero biases, not PyTorch's default."""
    torch.manual_seed(0)
    for layer in (m for m in DenseNet().layers if isinstance(m, torch.nn.Linear)):
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.99 * bound
        assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.05)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_learns_the_fake_digits(tiny_mnist: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = MNISTDataModule(str(tiny_mnist), val_size=100)
    trainer = cpu_trainer(tmp_path, max_epochs=3)
    model = MNISTClassifier()
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 3 * 16  # one optimizer step per batch of 32: 500 images are 16 batches
    assert trainer.test(model, datamodule=dm, verbose=False)[0]["test_acc"] > 0.9


def test_accuracy_is_keras_micro_accuracy_and_loss_is_the_mean_over_images(tiny_mnist: Path, tmp_path: Path) -> None:
    """An untrained network gets some classes far more right than others, so micro and macro accuracy differ."""
    torch.manual_seed(0)
    model = MNISTClassifier()
    dm = MNISTDataModule(str(tiny_mnist), val_size=100, eval_batch_size=64)  # 200 test images: 64, 64, 64, 8
    metrics = cpu_trainer(tmp_path).test(model, datamodule=dm, verbose=False)[0]
    labels = dm.splits["test"].labels
    with torch.no_grad():
        logits = model(dm.on_after_batch_transfer((dm.splits["test"].images, labels), 0)[0])
    right = logits.argmax(1) == labels
    assert metrics["test_acc"] == pytest.approx(right.float().mean().item(), abs=1e-6)  # Keras: the fraction right
    per_class = torch.stack([right[labels == k].float().mean() for k in range(10)])
    assert abs(per_class.mean().item() - right.float().mean().item()) > 0.01  # macro would be another number
    # the mean over all 200 images, not over the 4 batches (the last holds only 8)
    assert metrics["test_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert model.test_images == 200


def test_predict_returns_softmax_probabilities_and_classes(tiny_mnist: Path, tmp_path: Path) -> None:
    dm = MNISTDataModule(str(tiny_mnist), val_size=100)
    model = MNISTClassifier()
    outputs = cpu_trainer(tmp_path).predict(model, datamodule=dm)
    probabilities = torch.cat([o["probabilities"] for o in outputs])
    images = dm.on_after_batch_transfer((dm.splits["test"].images, dm.splits["test"].labels), 0)[0]
    with torch.no_grad():
        torch.testing.assert_close(probabilities, model(images).softmax(1))
    assert torch.equal(torch.cat([o["predicted"] for o in outputs]), probabilities.argmax(1))
    assert torch.equal(torch.cat([o["target"] for o in outputs]), dm.splits["test"].labels)


@pytest.mark.parametrize(
    ("trainer_kwargs", "expected_steps"),
    [
        ({"max_epochs": 2}, 32),
        ({"max_epochs": 2, "limit_train_batches": 5}, 10),
        ({"max_steps": 7}, 7),
        ({"max_epochs": 2, "accumulate_grad_batches": 3}, 12),
    ],  # fmt: skip
    ids=["epochs", "limit_train_batches", "max_steps", "accumulate_grad_batches"],
)
def test_onecycle_schedule_spans_exactly_the_optimizer_steps_that_run(
    trainer_kwargs: dict, expected_steps: int, tiny_mnist: Path, tmp_path: Path
) -> None:
    model = MNISTClassifier(lr=0.01, lr_schedule="onecycle")
    trainer = cpu_trainer(tmp_path, **trainer_kwargs)
    trainer.fit(model, datamodule=MNISTDataModule(str(tiny_mnist), val_size=100))
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.global_step == expected_steps
    assert scheduler.total_steps == scheduler.last_epoch == expected_steps  # warmed up and annealed in full


@pytest.mark.parametrize(("kwargs", "name"), [({"lr": -1.0}, "lr"), ({"hidden": 0}, "hidden")])
def test_nonsense_hyperparameters_are_refused_in_python(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        MNISTClassifier(**kwargs)


def test_training_and_validation_count_accuracy_as_keras_does_too(tiny_mnist: Path, tmp_path: Path) -> None:
    """An untrained network fit with a learning rate too small to move it: the epoch's train_acc and val_acc are then
    the fraction of each split it gets right (micro), not the mean of per-class accuracies (torchmetrics' macro)."""
    torch.manual_seed(0)
    model = MNISTClassifier(lr=1e-12)
    dm = MNISTDataModule(str(tiny_mnist), val_size=100)
    dm.setup("fit")
    expected = {}
    for stage in ("train", "val"):
        split = dm.splits[stage]
        with torch.no_grad():
            logits = model(dm.on_after_batch_transfer((split.images, split.labels), 0)[0])
        right = logits.argmax(1) == split.labels
        per_class = torch.stack([right[split.labels == k].float().mean() for k in range(10)])
        assert abs(per_class.nanmean().item() - right.float().mean().item()) > 0.005  # macro: another number
        expected[f"{stage}_acc"] = right.float().mean().item()
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=dm)
    assert {name: float(trainer.callback_metrics[name]) for name in expected} == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("lr_schedule", ["constant", "onecycle"])
def test_the_optimizer_is_adam_as_keras_configures_it(lr_schedule: str, tmp_path: Path) -> None:
    """Keras' Adam: betas 0.9/0.999, epsilon 1e-7 (torch's default is 1e-8), no weight decay, not AdamW."""
    model = MNISTClassifier(lr_schedule=lr_schedule)
    start = model.net.layers[1].weight.detach().clone()
    trainer = cpu_trainer(tmp_path, max_steps=3)
    dm = MNISTDataModule(str(BUNDLED_DATA))
    trainer.fit(model, datamodule=dm)
    (optimizer,) = trainer.optimizers
    assert type(optimizer) is torch.optim.Adam
    (group,) = optimizer.param_groups
    assert group["eps"] == 1e-7 and group["weight_decay"] == 0 and group["betas"][1] == 0.999
    if lr_schedule == "constant":
        assert group["betas"][0] == 0.9
    else:  # torch's OneCycleLR cycles beta1 against the learning rate, between 0.85 and 0.95, as the 1cycle policy does
        assert 0.85 <= group["betas"][0] <= 0.95
    assert not group["amsgrad"] and not group["maximize"]
    # Weight decay would move every weight; without it, those of the pixels no training digit inks never change.
    dark = dm.splits["train"].images.flatten(1).amax(0) == 0
    weights = model.net.layers[1].weight.detach()
    assert dark.any() and torch.equal(weights[:, dark], start[:, dark]) and not torch.equal(weights, start)
