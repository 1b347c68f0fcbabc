"""The network, the LightningModule and its training loop, on small fake digits."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_dense import DenseNet, MNISTClassifier, MNISTDataModule
from tests.conftest import cpu_trainer

_trainer = cpu_trainer


def test_dense_net_has_the_tutorials_101770_parameters() -> None:
    net = DenseNet()
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 101_770
    assert net(torch.rand(5, 28, 28)).shape == (5, 10)
    assert [type(m).__name__ for m in net.layers] == ["Flatten", "Linear", "ReLU", "Linear"]


def test_each_batch_gets_one_optimizer_step(tiny_mnist: Path, tmp_path: Path) -> None:
    """500 training images at batch 32 are 16 optimizer steps an epoch, however they are grouped."""
    steps = {}
    for group in (1, 5, 16):
        L.seed_everything(0)
        dm = MNISTDataModule(str(tiny_mnist), val_size=100, steps_per_execution=group)
        trainer = _trainer(tmp_path, max_epochs=2)
        trainer.fit(MNISTClassifier(), datamodule=dm)
        steps[group] = trainer.global_step
    assert steps == {1: 32, 5: 32, 16: 32}


def test_grouping_batches_changes_no_weight(tiny_mnist: Path, tmp_path: Path) -> None:
    weights = []
    for group in (1, 7):
        L.seed_everything(3)
        model = MNISTClassifier()
        _trainer(tmp_path, max_epochs=2).fit(
            model, datamodule=MNISTDataModule(str(tiny_mnist), val_size=100, steps_per_execution=group)
        )
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


def test_max_steps_is_exact_inside_a_group(tiny_mnist: Path, tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, max_steps=11)
    trainer.fit(MNISTClassifier(), datamodule=MNISTDataModule(str(tiny_mnist), val_size=100, steps_per_execution=4))
    assert trainer.global_step == 11


def test_learns_the_fake_digits_and_reports_keras_style_accuracy(tiny_mnist: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = MNISTDataModule(str(tiny_mnist), val_size=100)
    trainer = _trainer(tmp_path, max_epochs=3)
    model = MNISTClassifier()
    trainer.fit(model, datamodule=dm)
    metrics = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert metrics["test_acc"] > 0.9
    # micro accuracy = fraction of correct predictions, as Keras counts it
    images, labels = dm.splits["test"]
    with torch.no_grad():
        predicted = model(dm.on_after_batch_transfer((images, labels), 0)[0]).argmax(1)
    assert metrics["test_acc"] == pytest.approx((predicted == labels).float().mean().item(), abs=1e-6)


def test_predict_returns_probabilities_and_classes(tiny_mnist: Path, tmp_path: Path) -> None:
    dm = MNISTDataModule(str(tiny_mnist), val_size=100)
    outputs = _trainer(tmp_path).predict(MNISTClassifier(), datamodule=dm)
    probabilities = torch.cat([o["probabilities"] for o in outputs])
    assert probabilities.shape == (200, 10)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(200))
    assert torch.equal(torch.cat([o["predicted"] for o in outputs]), probabilities.argmax(1))
    assert torch.equal(torch.cat([o["target"] for o in outputs]), dm.splits["test"][1])


def test_gradient_clipping_bounds_every_step(tiny_mnist: Path, tmp_path: Path) -> None:
    norms = []

    class Recorder(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            norms.append(torch.cat([p.grad.flatten() for p in pl_module.parameters()]).norm().item())

    model = MNISTClassifier(gradient_clip_val=0.05)
    _trainer(tmp_path, max_steps=10, callbacks=[Recorder()]).fit(
        model, datamodule=MNISTDataModule(str(tiny_mnist), val_size=100)
    )
    assert len(norms) == 10 and max(norms) <= 0.05 + 1e-6


def test_onecycle_schedule_runs_over_the_real_number_of_optimizer_steps(tiny_mnist: Path, tmp_path: Path) -> None:
    model = MNISTClassifier(lr=0.01, lr_schedule="onecycle")
    trainer = _trainer(tmp_path, max_epochs=2)
    trainer.fit(model, datamodule=MNISTDataModule(str(tiny_mnist), val_size=100, steps_per_execution=8))
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == 32 and scheduler.last_epoch == 32  # warmed up and annealed in full


@pytest.mark.parametrize(("kwargs", "name"), [({"lr": -1.0}, "lr"), ({"hidden": 0}, "hidden")])
def test_nonsense_hyperparameters_are_refused_in_python(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        MNISTClassifier(**kwargs)
