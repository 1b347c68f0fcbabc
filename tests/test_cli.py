"""The real command line: parse-time refusals in process, end-to-end runs as subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_dense import MNISTClassifier
from mnist_dense.cli import main
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def run_cli(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mnist_dense", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--data.batch_size", "0"),
        ("--data.val_size", "-1"),
        ("--data.val_size", "60000"),
        ("--model.lr", "-1"),
        ("--model.lr", "0"),
        ("--model.hidden", "0"),
        ("--data.normalization", "zscore"),
    ],
)
def test_nonsense_values_are_refused_at_parse_time(flag: str, value: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", flag, value])
    assert exit_info.value.code == 2
    assert flag.removeprefix("--") in capsys.readouterr().err


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_parses(config: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["hidden"] == 128  # every configuration trains the tutorial's network


def test_defaults_are_the_tutorial(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["seed_everything"] == 0
    assert config["trainer"]["max_epochs"] == 5 and config["trainer"]["accelerator"] == "auto"
    assert config["data"]["batch_size"] == 32 and config["data"]["normalization"] == "unit"
    assert config["model"]["lr"] == 0.001 and config["model"]["hidden"] == 128


def test_fit_end_to_end_on_bundled_mnist(tmp_path: Path) -> None:
    """A fraction of an epoch on the real data, then the test set with the best checkpoint."""
    root = tmp_path / "run"
    args = ["fit", "--config", "configs/smoke.yaml", "--trainer.default_root_dir", str(root)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "101,770 trainable parameters" in output
    accuracy = float(re.search(r"Test accuracy: ([\d.]+)%", output).group(1))
    assert accuracy > 85.0  # chance is 10%
    version = root / "version_0"
    assert yaml.safe_load((version / "config.yaml").read_text())["seed_everything"] == 0
    checkpoints = sorted(p.name for p in (version / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("epoch") for name in checkpoints)
    model = MNISTClassifier.load_from_checkpoint(version / "checkpoints" / "last.ckpt", map_location="cpu")
    assert model.hparams.hidden == 128 and model.hparams.lr == 0.001

    again = run_cli(*args)  # the same command twice: no crash on the existing config.yaml
    assert again.returncode == 0, again.stderr[-3000:]
    assert (root / "version_1" / "config.yaml").exists() and (version / "checkpoints" / "last.ckpt").exists()


def test_validate_and_test_from_a_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "run"
    assert run_cli("fit", "--config", "configs/smoke.yaml", "--trainer.default_root_dir", str(root)).returncode == 0
    ckpt = root / "version_0" / "checkpoints" / "last.ckpt"
    result = run_cli("test", "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"test_acc\s+0\.(8|9)\d+", result.stdout)


def test_package_works_from_another_folder_with_a_users_own_trainer(tmp_path: Path) -> None:
    script = f"""
import lightning as L, torch
from mnist_dense import MNISTClassifier, MNISTDataModule
L.seed_everything(1)
dm = MNISTDataModule(data_dir={str(REPO / "data")!r}, val_size=1000)
model = MNISTClassifier()
trainer = L.Trainer(max_steps=200, limit_val_batches=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
trainer.fit(model, datamodule=dm)
print("ACC", trainer.test(model, datamodule=dm, verbose=False)[0]["test_acc"])
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split("ACC")[-1]) > 0.85


def test_bad_data_folder_exits_non_zero_with_one_clear_message(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in (REPO / "data" / "MNIST" / "raw").glob("*.gz"):
        (raw / gz.name).write_bytes(gz.read_bytes())
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"")  # an empty file wins over its .gz
    result = run_cli(
        "fit",
        "--config",
        "configs/smoke.yaml",
        "--data.data_dir",
        str(tmp_path),
        "--trainer.default_root_dir",
        str(tmp_path / "runs"),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{raw.resolve()}/t10k-labels-idx1-ubyte is empty" in result.stderr
