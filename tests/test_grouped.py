"""The opt-in grouped steps: the default module's training, bit for bit, with fewer Lightning steps."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

from mnist_dense import MNISTClassifier, MNISTDataModule
from mnist_dense.grouped import GroupedStepsClassifier
from tests.conftest import cpu_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS_PER_CALL = 5  # 16 batches an epoch of the tiny data: calls of 5, 5, 5 and 1 batches


class CountCalls(L.Callback):
    """How many times Lightning ran `training_step`, and the batch index each call ended on."""

    def __init__(self) -> None:
        self.batch_indices: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.batch_indices.append(batch_idx)


def train(model_class: type, data_dir: Path, tmp_path: Path, **trainer_kwargs) -> tuple[L.LightningModule, L.Trainer]:
    L.seed_everything(0, verbose=False)
    kwargs = {"steps_per_call": STEPS_PER_CALL} if model_class is GroupedStepsClassifier else {}
    model = model_class(lr=0.01, lr_schedule=trainer_kwargs.pop("lr_schedule", "constant"), **kwargs)
    trainer = cpu_trainer(tmp_path / model_class.__name__, callbacks=[CountCalls()], **trainer_kwargs)
    trainer.fit(model, datamodule=MNISTDataModule(str(data_dir), val_size=100))
    return model, trainer


@pytest.mark.parametrize(
    "trainer_kwargs",
    [
        {"max_epochs": 2},
        {"max_epochs": 2, "lr_schedule": "onecycle"},
        {"max_steps": 7},
        {"max_steps": 20},  # stops 4 batches into the second epoch
        {"max_epochs": 2, "limit_train_batches": 12},
        {"max_epochs": 2, "overfit_batches": 3},
    ],
    ids=["epochs", "onecycle", "max_steps_in_a_call", "max_steps_in_epoch_2", "limit_train_batches", "overfit"],
)
def test_same_weights_optimizer_state_and_metrics_as_the_default_module(
    trainer_kwargs: dict, tiny_mnist: Path, tmp_path: Path
) -> None:
    default, default_trainer = train(MNISTClassifier, tiny_mnist, tmp_path, **trainer_kwargs)
    grouped, grouped_trainer = train(GroupedStepsClassifier, tiny_mnist, tmp_path, **trainer_kwargs)

    # global_step counts optimizer steps, one per batch, and max_steps stops at the very step asked for
    assert grouped_trainer.global_step == default_trainer.global_step
    assert default_trainer.global_step == trainer_kwargs.get("max_steps", default_trainer.global_step)
    for name, weights in default.state_dict().items():
        assert torch.equal(weights, grouped.state_dict()[name]), name
    default_adam, grouped_adam = default_trainer.optimizers[0].state_dict(), grouped_trainer.optimizers[0].state_dict()
    for state_a, state_b in zip(default_adam["state"].values(), grouped_adam["state"].values(), strict=True):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state_a[key], state_b[key]), key
    for config_a, config_b in zip(
        default_trainer.lr_scheduler_configs, grouped_trainer.lr_scheduler_configs, strict=True
    ):
        assert config_a.scheduler.state_dict() == config_b.scheduler.state_dict()
    metrics_a, metrics_b = default_trainer.callback_metrics, grouped_trainer.callback_metrics
    assert set(metrics_a) == set(metrics_b) and "train_acc" in metrics_a
    for key, value in metrics_a.items():
        assert torch.equal(value, metrics_b[key]), key


def test_lightning_steps_once_per_group_and_sees_the_last_batch_index(tiny_mnist: Path, tmp_path: Path) -> None:
    _, trainer = train(GroupedStepsClassifier, tiny_mnist, tmp_path, max_epochs=1)
    (calls,) = [c for c in trainer.callbacks if isinstance(c, CountCalls)]
    assert calls.batch_indices == [4, 9, 14, 15]  # what the progress bar and batch-end callbacks see
    assert trainer.global_step == 16


@pytest.mark.parametrize(
    ("trainer_kwargs", "error", "words"),
    [
        ({"gradient_clip_val": 1.0}, MisconfigurationException, "gradient_clip_val=1.0"),
        ({"accumulate_grad_batches": 2}, MisconfigurationException, "accumulate_grad_batches=2"),
        ({"val_check_interval": 0.5}, ValueError, "cannot honour val_check_interval"),
        ({"val_check_interval": 4, "check_val_every_n_epoch": None}, ValueError, "cannot honour val_check_interval"),
        ({"check_val_every_n_epoch": None}, ValueError, "cannot honour check_val_every_n_epoch"),
    ],
    ids=["gradient_clip_val", "accumulate_grad_batches", "val_check_interval", "val_check_steps", "across_epochs"],
)
def test_each_flag_it_cannot_honour_is_refused_with_its_name_and_the_fix(
    trainer_kwargs: dict, error: type, words: str, tiny_mnist: Path, tmp_path: Path
) -> None:
    with pytest.raises(error) as info:
        train(GroupedStepsClassifier, tiny_mnist, tmp_path, max_epochs=1, **trainer_kwargs)
    message = str(info.value)
    assert words in message
    if error is ValueError:  # Lightning's own message (manual optimization) names the flag and the fix already
        assert "configs/grouped.yaml" in message and "default module" in message


@pytest.mark.parametrize("steps_per_call", [0, -3, 2.5, True])
def test_nonsense_steps_per_call_is_refused(steps_per_call) -> None:
    with pytest.raises(ValueError, match="steps_per_call"):
        GroupedStepsClassifier(steps_per_call=steps_per_call)
