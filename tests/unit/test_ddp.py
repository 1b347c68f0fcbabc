"""DDP on the CPU (gloo, two processes) against one process with the same global batch.

`strategy="ddp"` relaunches the command line for rank 1, so the CLI runs as a subprocess here.
Rank r takes every other index of each batch of the epoch's order (tests/unit/test_data.py checks the
shares are disjoint), so two ranks of 16 see exactly the single process's batches of 32: with the
gradients all-reduced, the weights agree to float rounding, and the metrics, reduced over both
ranks' halves of the validation set, agree with the single process's.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_dense.checkpoints import read_checkpoint
from mnist_dense.data.sampling import EvaluationShare
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


def same_weights_and_steps(ddp_root: Path, single_root: Path) -> None:
    first = read_checkpoint(ddp_root / "version_0" / "checkpoints" / "last.ckpt")
    second = read_checkpoint(single_root / "version_0" / "checkpoints" / "last.ckpt")
    assert first["global_step"] == second["global_step"] == STEPS
    for name, weights in first["state_dict"].items():
        torch.testing.assert_close(weights, second["state_dict"][name], rtol=0, atol=1e-5)


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
