"""The docs' long runs: the README's fit output against a real fit, and every Python block as a reader copies it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_docs import PYTHON_BLOCKS, README


def test_the_fit_output_the_readme_shows_has_every_line_a_fit_prints(tmp_path: Path) -> None:
    """The README's excerpt (written by `make results`) line for line against a short real fit, figures aside."""
    shown = README.read_text().split("$ python -m mnist_dense fit\n", 1)[1].split("```", 1)[0].splitlines()
    command = [sys.executable, "-m", "mnist_dense", "fit", "--trainer.limit_train_batches", "50"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, done.stdout[-3000:]

    def shape(lines: list[str]) -> list[str]:
        return [re.sub(r"\d[\d,.]*", "N", line) for line in lines if line.strip()]

    assert shape(shown) == shape(done.stdout.splitlines())


@pytest.mark.parametrize("page, block", PYTHON_BLOCKS, ids=[f"{p.name}-{i}" for i, (p, _) in enumerate(PYTHON_BLOCKS)])
def test_every_python_block_of_the_docs_runs_as_a_reader_copies_it(page: Path, block: str, tmp_path: Path) -> None:
    """Each block runs in an empty folder; a block that reads a file of a run finds one made as the docs make it."""
    if "runs/version_0/checkpoints/last.onnx" in block:
        from tests.e2e.deploy.conftest import fit_checkpoint

        ckpt = fit_checkpoint(tmp_path / "fit", steps=50)
        onnx = tmp_path / "runs" / "version_0" / "checkpoints" / "last.onnx"
        exported = subprocess.run(
            [sys.executable, "-m", "mnist_dense", "export", "--ckpt_path", str(ckpt), "--output", str(onnx)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr[-3000:]
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{page.name}:\n{block}\n{result.stderr[-3000:]}"
    assert not (tmp_path / "data").exists()  # the bundled data is found without a path
    if 'print("test accuracy"' in block:  # the README's conv net of your own, one epoch
        assert float(re.search(r"test accuracy ([\d.]+)", result.stdout).group(1)) > 0.95
