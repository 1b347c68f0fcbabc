"""DDP on the CPU in real processes (gloo): two processes, two torchrun nodes, SIGTERM to one of them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_dense.checkpoints import read_checkpoint
from tests.conftest import REPO
from tests.unit.test_console import NOISE
from tests.unit.test_ddp import (
    COMMON,
    DRAWN_BAR,
    ENV,
    QUIET,
    STEPS,
    fit,
    same_weights_and_steps,
    start_two_nodes,
    wait_all,
)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """One process of batch 32, the reference of every DDP run here: its run folder and metrics."""
    root = tmp_path_factory.mktemp("single")
    metrics, _ = fit(root, "--trainer.devices", "1", "--data.batch_size", "32", *QUIET)
    return root, metrics


def test_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path: Path, single) -> None:
    ddp, printed = fit(tmp_path / "ddp", "--trainer.strategy", "ddp", "--trainer.devices", "2",
                       "--data.batch_size", "16", *DRAWN_BAR)  # fmt: skip
    single_root, single = single

    # Rank 0 alone printed the summary, the bar's running figures and the epoch's line.
    assert printed.count("Total params: 101,770") == 1 and printed.count("Epoch 1/1 - ") == 1
    assert f"Epoch 1/1: {STEPS // 2}/{STEPS}" in printed and "loss: " in printed  # 50 of rank 0's 100 steps

    # Only rank 0 wrote: one run folder, one log, one set of checkpoints.
    assert [p.name for p in (tmp_path / "ddp").iterdir()] == ["version_0"]
    assert sorted(p.name for p in (tmp_path / "ddp" / "version_0").iterdir()) == sorted(
        p.name for p in (single_root / "version_0").iterdir()
    )
    same_weights_and_steps(tmp_path / "ddp", single_root)
    # Accuracy over all 2,000 validation and 10,000 test images: one image is 5e-4 and 1e-4 of them.
    assert abs(ddp["val_acc"] - single["val_acc"]) < 1e-3
    assert abs(ddp["test_acc"] - single["test_acc"]) < 1e-3
    assert ddp["test_acc"] > 0.8


def test_two_nodes_through_torchrun_match_one_process_and_print_no_warning(tmp_path: Path, single) -> None:
    root = tmp_path / "two-nodes"
    codes, logs = wait_all(start_two_nodes(root, *COMMON, *QUIET), root)
    assert codes == [0, 0], logs
    single_root, reference = single
    same_weights_and_steps(root, single_root)
    # Rank 0 alone wrote (one run folder, the same files as one process) and printed the summary and the result.
    assert [p.name for p in root.iterdir()] == ["version_0"]
    assert sorted(p.name for p in (root / "version_0").iterdir()) == sorted(
        p.name for p in (single_root / "version_0").iterdir()
    )
    both = "".join(logs)
    assert both.count("Test accuracy: ") == 1 and "on 10,000 images" in both
    assert not [line for line in both.splitlines() if NOISE.search(line)], both  # no warning, no deprecation
    assert abs(float(re.search(r"Test accuracy: ([\d.]+)%", both).group(1)) / 100 - reference["test_acc"]) < 1e-3


def test_sigterm_to_one_node_stops_both_and_another_world_size_is_refused_naming_both(tmp_path: Path) -> None:
    root = tmp_path / "two-nodes"
    nodes = start_two_nodes(root, "--trainer.max_epochs", "1", "--data.val_size", "2000", *QUIET)
    log = root.parent / f"{root.name}.node0.log"
    while "SIGTERM stops after the current step" not in log.read_text():
        assert all(node.poll() is None for node in nodes), log.read_text()
        time.sleep(0.2)
    time.sleep(1)  # some steps in
    (worker,) = Path(f"/proc/{nodes[1].pid}/task/{nodes[1].pid}/children").read_text().split()
    os.kill(int(worker), signal.SIGTERM)  # node 1's training process alone
    codes, logs = wait_all(nodes, root)
    assert codes == [1, 1]  # torchrun's own status when a process ends with another than 0 ...
    assert all("exitcode  : 143" in text for text in logs), logs  # ... which it reports: each process's 143
    saved = read_checkpoint(root / "version_0" / "checkpoints" / "interrupted.ckpt")
    assert 0 < saved["global_step"] < 1875  # stopped mid-epoch, well before its end
    assert "SIGTERM: training stopped at epoch 0, step " in logs[0] and str(saved["global_step"]) in logs[0]

    # One process, as the checkpoint's global batch: refused before any step, both layouts named, no traceback.
    command = [sys.executable, "-m", "mnist_dense", "fit", "--trainer.default_root_dir", str(root), "--ckpt_path",
               "last", "--data.batch_size", "32", "--data.val_size", "2000", *QUIET]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    (error,) = done.stderr.strip().splitlines()[-1:]
    assert error.startswith("error: ") and "'processes': 2" in error and "'processes': 1" in error
    assert "Traceback" not in done.stderr
