"""The command line as users run it: subprocesses, a run=False build, the process's collector and allocator."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_dense import MNISTClassifier
from mnist_dense.cli import MNISTDenseCLI
from mnist_dense.commands import main
from tests.conftest import REPO
from tests.unit.test_cli import MAPPED_BLOCKS_AFTER_A_4MB_MALLOC, run_cli


def test_run_false_builds_a_fit_with_the_packages_hooks_and_runs_nothing(tmp_path: Path) -> None:
    """`MNISTDenseCLI(args, run=False)`: no subcommand, and every hook treats it as the fit it builds."""
    threads = torch.get_num_threads()
    cli = MNISTDenseCLI(args=["--data.val_size", "0", "--trainer.default_root_dir", str(tmp_path)], run=False)
    torch.set_num_threads(threads)
    assert cli.config.checkpoint.monitor is None  # no validation set: the latest epoch is kept as best
    assert cli.trainer.limit_val_batches == 0 and cli.trainer.max_epochs == 5
    assert cli.config.trainer.logger["init_args"]["save_dir"] == str(tmp_path)  # the run folder, as for fit
    assert cli.trainer.global_step == 0 and not list(tmp_path.iterdir())  # nothing trained, nothing written


def test_validate_and_test_from_a_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "run"
    assert run_cli("fit", "--config", "configs/smoke.yaml", "--trainer.default_root_dir", str(root)).returncode == 0
    ckpt = root / "version_0" / "checkpoints" / "last.ckpt"
    result = run_cli("test", "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"test_acc\W+0\.(8|9)\d+", result.stdout)


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


def test_predicting_own_pictures_needs_only_the_checkpoint_from_any_folder(tiny_mnist: Path, tmp_path: Path) -> None:
    from torchvision.io import write_png

    from mnist_dense.pictures import prepare_digit
    from mnist_dense.scaling import to_model_input

    main(["fit", "--data.data_dir", str(tiny_mnist), "--data.val_size", "100", "--trainer.max_epochs", "1",
          "--data.normalization", "standard", "--test_after_fit", "false", "--trainer.enable_progress_bar", "false",
          "--trainer.default_root_dir", str(tmp_path / "fit")])  # fmt: skip
    ckpt = tmp_path / "fit" / "version_0" / "checkpoints" / "last.ckpt"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "mine").mkdir(parents=True)
    picture = torch.zeros(1, 120, 90, dtype=torch.uint8)
    picture[0, 10:110, 40:55] = 255  # the tiny data's digit 2 is a bar at columns 6-9: here one tall bar
    write_png(picture, str(elsewhere / "mine" / "bar.png"))
    result = run_cli("predict", "--ckpt_path", str(ckpt), "--data.predict_images", "mine",
                     "--data.data_dir", str(elsewhere / "no-mnist-here"), cwd=elsewhere)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (elsewhere / "no-mnist-here").exists()  # no MNIST file was looked for, let alone downloaded
    (row,) = csv.DictReader((elsewhere / "runs" / "version_0" / "predictions.csv").open())
    model = MNISTClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    with torch.no_grad():  # the checkpoint's own normalization ("standard") applied to the prepared picture
        probabilities = model(to_model_input(prepare_digit(picture)[None], "standard")).softmax(1)[0]
    assert int(row["predicted"]) == int(probabilities.argmax())
    assert float(row["probability"]) == pytest.approx(float(probabilities.max()), abs=1e-6)


@pytest.mark.parametrize("collecting", [True, False])
def test_importing_the_package_leaves_the_callers_garbage_collector_as_it_was(collecting: bool) -> None:
    probe = f"import gc; gc.enable() if {collecting} else gc.disable(); import mnist_dense; print(gc.isenabled())"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == str(collecting), done.stderr[-2000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize(
    ("call", "env", "mapped"),
    [("none", {}, 1), ("keep", {}, 0), ("keep", {"MALLOC_MMAP_THRESHOLD_": "131072"}, 1)],
    ids=["glibc-default", "kept-on-the-heap", "the-users-setting-stays"],
)
def test_the_command_line_keeps_freed_memory_on_the_heap_unless_malloc_is_configured(
    call: str, env: dict[str, str], mapped: int
) -> None:
    """A 4 MB block is a fresh mapping with glibc's defaults (128 KB threshold), and on the heap after
    `keep_freed_memory`; a threshold the user set through the environment is left as it is."""
    done = subprocess.run([sys.executable, "-c", MAPPED_BLOCKS_AFTER_A_4MB_MALLOC, call], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) == mapped
