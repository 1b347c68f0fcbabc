"""What a terminal shows when the real command runs: whole lines, one per epoch, no warning or advertisement."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.unit.test_console import EPOCH_LINE, NOISE, run_in_terminal, terminal_screen


def test_in_a_terminal_every_line_stays_whole_and_each_epoch_keeps_its_line(tmp_path: Path) -> None:
    limits = ["--trainer.limit_train_batches", "60", "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "2"]
    raw = run_in_terminal(["fit", *limits, "--data.val_size", "1000", "--test_after_fit", "false", "--plots.enabled",
                           "false", "--trainer.default_root_dir", str(tmp_path)], cwd=REPO)  # fmt: skip
    assert "\r" in raw and "Epoch 2/2: 60/60 |" in raw  # the bar was drawn
    screen = [line for line in terminal_screen(raw.replace("\r\n", "\n")) if line]
    interrupt = [line for line in screen if "Ctrl-C or SIGTERM" in line]
    assert len(interrupt) == 1 and interrupt[0].startswith("Ctrl-C or SIGTERM") and interrupt[0].endswith("from.")
    epochs = [EPOCH_LINE.match(line) for line in screen if "Epoch" in line]
    assert all(epochs) and [m.group(1) for m in epochs] == ["1", "2"]  # both stay, whole; no bar left behind
    assert all(m.group(5) for m in epochs)  # with the validation figures
    assert not [line for line in screen if re.search(r"\d+/\d+ \|", line)]


def test_a_default_run_and_the_other_commands_print_no_warning_or_advertisement(tmp_path: Path) -> None:
    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-3000:]
        assert not [line for line in output.splitlines() if NOISE.search(line)], output
        assert "\r" not in output  # a pipe, not a terminal: no bar frames
        return output

    fit = run("mnist_dense", "fit", "--trainer.limit_train_batches", "50", "--trainer.max_epochs", "1")
    assert "Total params: 101,770" in fit and len(re.findall(r"^Epoch 1/1 - ", fit, re.MULTILINE)) == 1
    ckpt = "runs/version_0/checkpoints/last.ckpt"
    run("mnist_dense", "test", "--ckpt_path", ckpt)
    run("mnist_dense", "predict", "--ckpt_path", ckpt)
    run("mnist_dense.show", "--index", "0")
    run("mnist_dense.shift", "--max_shift", "1", "--ckpt_path", ckpt)
    # DDP too, on three processes (gloo): no DistributedSampler-at-test warning, no all_gather deprecation, and every
    # test image counted once though three do not divide 10,000 (padding would count 10,002).
    three = ["--trainer.strategy", "ddp", "--trainer.devices", "3", "--trainer.accelerator", "cpu"]
    few = ["--trainer.limit_train_batches", "5", "--trainer.log_every_n_steps", "5", "--trainer.max_epochs", "1"]
    ddp = run("mnist_dense", "fit", *few, *three, "--data.batch_size", "16", "--trainer.default_root_dir", "ddp")
    assert "on 10,000 images" in ddp and re.search(r"\d of 10,000 right", ddp)
    if all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime")):
        run("mnist_dense", "export", "--ckpt_path", ckpt)
