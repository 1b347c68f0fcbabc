"""The fast training path computes what Lightning's path computes; the benchmark runs and reports."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from mnist_dense import MNISTClassifier, MNISTDataModule, benchmark
from tests.conftest import BUNDLED_DATA, cpu_trainer

_trainer = cpu_trainer


class StepHook(L.Callback):
    """Overrides a step hook, which the direct step would skip: its presence forces Lightning's path."""

    def __init__(self) -> None:
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.calls += 1


def _fit(tiny_mnist: Path, tmp_path: Path, seed: int = 3, callbacks=(), model_kwargs=None, **trainer_kwargs):
    L.seed_everything(seed)
    model = MNISTClassifier(**(model_kwargs or {}))
    trainer = _trainer(tmp_path, callbacks=list(callbacks), **trainer_kwargs)
    trainer.fit(model, datamodule=MNISTDataModule(str(tiny_mnist), val_size=100, steps_per_execution=5))
    return model, trainer


def _adam_steps(trainer: L.Trainer) -> set[int]:
    return {int(state["step"]) for state in trainer.optimizers[0].state.values()}


def test_direct_step_gives_bitwise_the_weights_of_lightnings_path(tiny_mnist: Path, tmp_path: Path) -> None:
    direct, direct_trainer = _fit(tiny_mnist, tmp_path, max_epochs=2)
    hook = StepHook()
    lightning, lightning_trainer = _fit(tiny_mnist, tmp_path, callbacks=[hook], max_epochs=2)
    assert direct.direct_step and not lightning.direct_step
    assert hook.calls == 32  # Lightning's path ran, once per batch
    for a, b in zip(direct.parameters(), lightning.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert direct_trainer.global_step == lightning_trainer.global_step == 32
    assert _adam_steps(direct_trainer) == _adam_steps(lightning_trainer) == {32}


def test_onecycle_schedule_steps_once_per_optimizer_step_on_the_direct_path(tiny_mnist: Path, tmp_path: Path) -> None:
    model, trainer = _fit(tiny_mnist, tmp_path, model_kwargs={"lr": 0.01, "lr_schedule": "onecycle"}, max_epochs=2)
    assert model.direct_step
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == trainer.global_step == 32


def test_max_steps_stops_exactly_inside_a_group_on_the_direct_path(tiny_mnist: Path, tmp_path: Path) -> None:
    model, trainer = _fit(tiny_mnist, tmp_path, max_steps=11)
    assert model.direct_step
    assert trainer.global_step == 11 and _adam_steps(trainer) == {11}


def test_clipping_takes_lightnings_path_and_still_clips(tiny_mnist: Path, tmp_path: Path) -> None:
    norms = []

    class Recorder(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            norms.append(torch.cat([p.grad.flatten() for p in pl_module.parameters()]).norm().item())

    model, trainer = _fit(tiny_mnist, tmp_path, model_kwargs={"gradient_clip_val": 0.05}, max_steps=7)
    assert not model.direct_step
    model, trainer = _fit(
        tiny_mnist, tmp_path, callbacks=[Recorder()], model_kwargs={"gradient_clip_val": 0.05}, max_steps=7
    )
    assert len(norms) == 7 and max(norms) <= 0.05 + 1e-6


def test_bf16_mixed_precision_on_the_cpu_takes_lightnings_path(tiny_mnist: Path, tmp_path: Path) -> None:
    model, trainer = _fit(tiny_mnist, tmp_path, precision="bf16-mixed", max_steps=6)
    assert not model.direct_step
    assert trainer.global_step == 6 and _adam_steps(trainer) == {6}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast keeps fp32 master weights


def test_training_step_makes_no_host_sync(tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU each of these would wait for the device; the training step must not call them.

    Adam reads its own step counters with `.item()`: torch keeps them on the host (unless
    `capturable`), so that read waits for nothing and is left out.
    """
    calls = []
    inside = {"step": False, "optimizer": None}
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            counters = [state.get("step") for state in inside["optimizer"].state.values()] if inside["step"] else []
            if inside["step"] and not any(self is counter for counter in counters):
                calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    training_step = MNISTClassifier.training_step

    def watched(self, batch, batch_idx):
        inside["step"] = True
        inside["optimizer"] = self.trainer.optimizers[0]
        try:
            return training_step(self, batch, batch_idx)
        finally:
            inside["step"] = False

    monkeypatch.setattr(MNISTClassifier, "training_step", watched)
    model, trainer = _fit(tiny_mnist, tmp_path, max_epochs=1)
    assert trainer.global_step == 16 and calls == []


def test_data_moves_once_to_any_accelerator_root_device(tiny_mnist: Path) -> None:
    dm = MNISTDataModule(str(tiny_mnist), val_size=100)
    for device, expected in (("cpu", "cpu"), ("meta", "meta"), ("cuda", "cuda"), ("mps", "mps")):
        dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        assert dm._device().type == expected
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    dm.setup("fit")
    assert {x.device.type for pair in dm.on_device.values() for x in pair} == {"meta"}
    assert dm.on_device["train"][0].dtype == torch.uint8  # pixels travel as bytes, scaled on the device


def test_benchmark_runs_tiny_and_writes_a_table_and_raw_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench"
    benchmark.main(
        ["--epochs", "1", "--limit", "16", "--repeats", "1", "--only", "a,c", "--data_dir", str(BUNDLED_DATA)]
        + ["--out_dir", str(out)]
    )
    table = (out / "latest.md").read_text()
    assert table == capsys.readouterr().out.strip() + "\n"
    assert "| (a) `python -m mnist_dense fit` |" in table and "| (c) a plain PyTorch loop" in table
    assert "per epoch a/c = " in table and "(b)" not in table
    (raw_path,) = out.glob("*.json")
    raw = json.loads(raw_path.read_text())
    assert [r["which"] for r in raw["runs"]] == ["a", "c"]
    for run in raw["runs"]:
        assert len(run["epoch_seconds"]) == 1 and run["epoch_seconds"][0] > 0
        assert 0.1 < run["test_acc"] <= 1 and 100 < run["peak_rss_mb"] < 10_000


def test_benchmark_refuses_an_unknown_run_name(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--only", "a,x"])
    assert exit_info.value.code == 2 and "--only 'a,x'" in capsys.readouterr().err
