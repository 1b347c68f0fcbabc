"""DDP on the CPU (gloo, two processes) against one process with the same global batch.

`strategy="ddp"` relaunches the command line for rank 1, so the CLI runs as a subprocess here.
Rank r takes every other index of each batch of the epoch's order (tests/test_data.py checks the
shares are disjoint), so two ranks of 16 see exactly the single process's batches of 32: with the
gradients all-reduced, the weights agree to float rounding, and the metrics, reduced over both
ranks' halves of the validation set, agree with the single process's.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_dense.checkpoints import read_checkpoint
from tests.conftest import REPO

STEPS = 100
COMMON = ["--data.val_size", "2000", "--trainer.max_epochs", "1"]
COMMON += ["--trainer.limit_train_batches", str(STEPS), "--trainer.accelerator", "cpu"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
# The package's bar drawn as in a terminal: rank 0 reads the metric objects' running state every 5 steps, rank 1
# never; a collective call there would hang the run.
DRAWN_BAR = ["--trainer.callbacks+=mnist_dense.callbacks.KerasProgressBar", "--trainer.callbacks.frames", "true"]
DRAWN_BAR += ["--trainer.callbacks.refresh_rate", "5"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # one thread a process on a shared CPU


def fit(root: Path, *args: str) -> tuple[dict[str, float], str]:
    """The run's logged metrics (over both ranks), and what it printed."""
    command = [sys.executable, "-m", "mnist_dense", "fit", "--trainer.default_root_dir", str(root), *COMMON, *args]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics: dict[str, float] = {}
    for row in csv.DictReader((root / "version_0" / "metrics.csv").open()):
        metrics.update({key: float(value) for key, value in row.items() if value and key not in ("epoch", "step")})
    return metrics, result.stdout


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    ddp, printed = fit(tmp_path / "ddp", "--trainer.strategy", "ddp", "--trainer.devices", "2",
                       "--data.batch_size", "16", *DRAWN_BAR)  # fmt: skip
    single, _ = fit(tmp_path / "single", "--trainer.devices", "1", "--data.batch_size", "32", *QUIET)

    # Rank 0 alone printed the summary, the bar's running figures and the epoch's line.
    assert printed.count("Total params: 101,770") == 1 and printed.count("Epoch 1/1 - ") == 1
    assert f"Epoch 1/1: {STEPS // 2}/{STEPS}" in printed and "loss: " in printed  # 50 of rank 0's 100 steps

    # Only rank 0 wrote: one run folder, one log, one set of checkpoints.
    assert [p.name for p in (tmp_path / "ddp").iterdir()] == ["version_0"]
    assert sorted(p.name for p in (tmp_path / "ddp" / "version_0").iterdir()) == sorted(
        p.name for p in (tmp_path / "single" / "version_0").iterdir()
    )
    first = read_checkpoint(tmp_path / "ddp" / "version_0" / "checkpoints" / "last.ckpt")
    second = read_checkpoint(tmp_path / "single" / "version_0" / "checkpoints" / "last.ckpt")
    assert first["global_step"] == second["global_step"] == STEPS
    for name, weights in first["state_dict"].items():
        torch.testing.assert_close(weights, second["state_dict"][name], rtol=0, atol=1e-5)
    # Accuracy over all 2,000 validation and 10,000 test images: one image is 5e-4 and 1e-4 of them.
    assert abs(ddp["val_acc"] - single["val_acc"]) < 1e-3
    assert abs(ddp["test_acc"] - single["test_acc"]) < 1e-3
    assert ddp["test_acc"] > 0.8
