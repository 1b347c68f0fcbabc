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
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnist_dense.checkpoints import read_checkpoint
from mnist_dense.data.sampling import EvaluationShare
from tests.conftest import REPO
from tests.test_console import NOISE

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


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """One process of batch 32, the reference of every DDP run here: its run folder and metrics."""
    root = tmp_path_factory.mktemp("single")
    metrics, _ = fit(root, "--trainer.devices", "1", "--data.batch_size", "32", *QUIET)
    return root, metrics


def same_weights_and_steps(ddp_root: Path, single_root: Path) -> None:
    first = read_checkpoint(ddp_root / "version_0" / "checkpoints" / "last.ckpt")
    second = read_checkpoint(single_root / "version_0" / "checkpoints" / "last.ckpt")
    assert first["global_step"] == second["global_step"] == STEPS
    for name, weights in first["state_dict"].items():
        torch.testing.assert_close(weights, second["state_dict"][name], rtol=0, atol=1e-5)


@pytest.mark.slow
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


# --- two nodes through torchrun, every evaluation image once, SIGTERM to one node, another world size ----------------


def two_node_command() -> list[str]:
    """docs/scaling.md's two-node command, word for word (NODE_RANK left as a variable)."""
    text = (REPO / "docs" / "scaling.md").read_text()
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL) if "--rdzv-endpoint 127.0.0.1" in b]
    return shlex.split(block.replace("\\\n", " "))


def start_two_nodes(root: Path, *args: str) -> list[subprocess.Popen]:
    """Both nodes of the docs' command on a free port, into `root`, with `args` after the docs' flags."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    words = two_node_command()
    assert words[0] == "torchrun"
    words = [sys.executable, "-m", "torch.distributed.run", *words[1:]]
    words[words.index("--rdzv-endpoint") + 1] = f"127.0.0.1:{port}"
    words[words.index("--trainer.default_root_dir") + 1] = str(root)
    nodes = []
    for rank in (0, 1):
        env = {**ENV, "NODE_RANK": str(rank)}
        with open(root.parent / f"{root.name}.node{rank}.log", "w") as out:  # the node keeps its own copy
            nodes.append(subprocess.Popen([*words, *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
    return nodes


def wait_all(nodes: list[subprocess.Popen], root: Path) -> tuple[list[int], list[str]]:
    """Each node's exit status and what it printed."""
    codes = [node.wait(timeout=300) for node in nodes]
    logs = [(root.parent / f"{root.name}.node{rank}.log").read_text() for rank in (0, 1)]
    return codes, logs


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.parametrize("count", [10_000, 7, 1])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_each_process_evaluates_its_share_and_every_image_counts_once(count: int, world_size: int) -> None:
    data = range(count)
    shares = [list(EvaluationShare(data, rank=rank, world_size=world_size)) for rank in range(world_size)]
    assert sorted(i for share in shares for i in share) == list(data)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert [len(EvaluationShare(data, rank=r, world_size=world_size)) for r in range(world_size)] == list(
        map(len, shares)
    )
