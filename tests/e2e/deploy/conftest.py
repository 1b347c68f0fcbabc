"""Fixtures for export, serve and the page: one checkpoint trained for real, and the test digits as PNG files."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_png

from benchmarks.browser import CHROMIUM, launch
from mnist_dense.data import load_split
from tests.conftest import BUNDLED_DATA, REPO


def fit_checkpoint(root: Path, *flags: str, config: str | None = None, steps: int = 400) -> Path:
    """`steps` steps of `fit` on the bundled MNIST, through the CLI as a user runs it; the last checkpoint."""
    command = [sys.executable, "-m", "mnist_dense", "fit", *(["--config", config] if config else []),
               "--trainer.max_steps", str(steps), "--data.val_size", "1000",
               "--trainer.limit_val_batches", "2", "--test_after_fit", "false", "--trainer.enable_progress_bar",
               "false", "--plots.enabled", "false", "--trainer.default_root_dir", str(root), *flags]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=600)
    return root / "version_0" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial's network after 400 steps: about 92% test accuracy."""
    return fit_checkpoint(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def trained_conv_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 steps of `fit --config configs/conv.yaml` (the global-pool conv net) on the bundled MNIST, via the CLI."""
    return fit_checkpoint(tmp_path_factory.mktemp("trained_conv"), config="configs/conv.yaml", steps=300)


@pytest.fixture(scope="session")
def mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    """The 10,000 bundled test digits (uint8, N x 28 x 28) and their labels."""
    return load_split(BUNDLED_DATA, "test")


@pytest.fixture(scope="session")
def digit_pngs(mnist_test) -> list[tuple[str, int]]:
    """The first 40 test digits as base64 PNG files, as a client would send them, with their labels."""
    images, labels = mnist_test
    return [
        (base64.b64encode(encode_png(images[i][None]).numpy().tobytes()).decode(), int(labels[i])) for i in range(40)
    ]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium through Playwright; skipped with the reason where it is missing (CI requires it)."""
    if not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM}: `apt-get install chromium` (Debian) runs this test; .ci/run does"
        if os.environ.get("MNIST_DENSE_REQUIRE_BROWSER"):  # set by .ci/run: CI must run the browser test
            pytest.fail(reason)
        pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright comes with the deploy extra")
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()
