"""Signals to a real fit: interrupted.ckpt and the printed command that resumes exactly; SIGKILL while saving."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mnist_dense.checkpoints import find_latest_checkpoint, read_checkpoint
from tests.conftest import REPO
from tests.unit.test_resume import ENV, REAL, assert_same_training_state, start_cli, wait_for_line

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_left_alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("alone")
    process = start_cli("fit", "--trainer.default_root_dir", str(root), *REAL)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return root / "version_0" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_and_the_printed_command_resumes_exactly(
    sig: signal.Signals, code: int, run_left_alone: Path, tmp_path: Path
) -> None:
    pause = ["--trainer.callbacks+=tests.helpers.PauseAtStep", "--trainer.callbacks.step", "50"]
    process = start_cli("fit", "--trainer.default_root_dir", str(tmp_path), *REAL, *pause)
    lines = wait_for_line(process, "PAUSED at step 50")  # it waits there for the signal: no race with the run's end
    process.send_signal(sig)
    rest, _ = process.communicate(timeout=120)
    output = "".join(lines) + rest
    assert process.returncode == code, output[-3000:]
    saved = tmp_path / "version_0" / "checkpoints" / "interrupted.ckpt"
    assert read_checkpoint(saved)["global_step"] == 50  # stopped after the step in progress, mid-epoch
    command = re.search(r"Resume with:\n\s+(.+)", output).group(1)
    assert command.endswith(f"--ckpt_path {saved}")
    if sig == signal.SIGTERM:  # steps of another size cannot skip what was done: refused, not guessed
        other = subprocess.run(
            [sys.executable, *shlex.split(command)[1:], "--data.batch_size", "64"],
            cwd=REPO,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert other.returncode == 1 and "middle of an epoch" in other.stderr and str(saved) in other.stderr

    resumed = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last = max(tmp_path.glob("version_*/checkpoints/last.ckpt"))  # version_1, or version_2 after the refusal
    assert_same_training_state(run_left_alone, last)
    assert saved.exists()  # the interrupted run's folder is left as it was


def test_sigkill_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    """The process dies for real (SIGKILL) after the new bytes are written, before they are renamed."""
    target = tmp_path / "last.ckpt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from mnist_dense.checkpoints import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        io.save_checkpoint({{"state_dict": {{"w": torch.zeros(3)}}, "generation": 1}}, {str(target)!r})
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        io.save_checkpoint({{"state_dict": {{"w": torch.ones(100_000)}}, "generation": 2}}, {str(target)!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert torch.load(target, weights_only=True)["generation"] == 1
    assert find_latest_checkpoint(tmp_path) == target
