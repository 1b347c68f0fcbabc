"""The real command line: parse-time refusals in process, end-to-end runs as subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mnist_dense import MNISTClassifier, MNISTDataModule
from mnist_dense.checkpoints import read_checkpoint
from mnist_dense.commands import main
from tests.conftest import REPO, cpu_trainer
from tests.tiny_runs import fit_tiny, logged

CONFIGS = sorted(c for c in (REPO / "configs").glob("*.yaml") if c.name != "sweep.yaml")  # sweep.yaml: a search space


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
        ("--threads", "0"),
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
    net = printed["model"]["net"]
    if config.name.startswith("conv"):  # the convolutional networks of "Why convolutions"
        assert net["class_path"] in ("mnist_dense.model.ClassicConvNet", "mnist_dense.model.GlobalPoolConvNet")
    else:  # the tutorial's network
        assert net is None and printed["model"]["hidden"] == 128


def test_defaults_are_the_tutorial(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["seed_everything"] == 0
    assert config["trainer"]["max_epochs"] == 5 and config["trainer"]["accelerator"] == "auto"
    assert config["data"]["batch_size"] == 32 and config["data"]["normalization"] == "unit"
    assert config["data"]["val_size"] == 0  # the tutorial trains on all 60,000 and validates nothing
    assert config["model"]["lr"] == 0.001 and config["model"]["hidden"] == 128
    assert config["model"]["net"] is None  # the tutorial's DenseNet


def test_fit_end_to_end_on_bundled_mnist(tmp_path: Path) -> None:
    """A fraction of an epoch on the real data, then the test set with the best checkpoint."""
    root = tmp_path / "run"
    args = ["fit", "--config", "configs/smoke.yaml", "--trainer.default_root_dir", str(root)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Total params" not in output  # smoke.yaml turns the summary off
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


def test_after_fit_tests_the_best_checkpoint_not_the_last_epoch(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    main(["fit", "--data.data_dir", str(tiny_mnist), "--data.val_size", "100", "--trainer.max_epochs", "3",
          "--trainer.callbacks+=tests.helpers.SpoilLastEpoch", "--trainer.default_root_dir", str(tmp_path),
          "--trainer.enable_progress_bar", "false"])  # fmt: skip
    printed = re.search(r"Test accuracy: ([\d.]+)% on 200 images \((.+)\)", capsys.readouterr().out)
    folder = tmp_path / "version_0" / "checkpoints"
    (best,) = folder.glob("epoch*.ckpt")
    assert printed.group(2) == str(best) and read_checkpoint(best)["epoch"] < 2

    def accuracy(path: Path) -> float:
        model = MNISTClassifier.load_from_checkpoint(path, map_location="cpu")
        dm = MNISTDataModule(str(tiny_mnist), val_size=100)
        return cpu_trainer(tmp_path / "eval").test(model, datamodule=dm, verbose=False)[0]["test_acc"]

    assert float(printed.group(1)) == pytest.approx(100 * accuracy(best), abs=0.005)
    assert accuracy(folder / "last.ckpt") < accuracy(best) - 0.2  # testing the last epoch would show


@pytest.mark.parametrize("nvml_loads", [True, False])
def test_lightnings_nvml_check_stays_only_where_nvml_loads(nvml_loads: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    from mnist_dense.runtime import skip_failing_nvml_check

    def cdll(name: str):
        if not nvml_loads:
            raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as `import lightning` sets it
    skip_failing_nvml_check()
    assert (os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1") is nvml_loads


@pytest.mark.parametrize(
    ("flag", "omp", "expected"),
    [
        ([], None, 1),  # the dense network: one thread
        ([], "2", 2),  # OMP_NUM_THREADS set: torch's count, which the caller has
        (["--model.net", "GlobalPoolConvNet"], None, 2),  # convolutions: torch's count
        (["--threads", "2"], None, 2),
        (["--model.net", "GlobalPoolConvNet", "--threads", "1"], None, 1),
    ],
    ids=["dense-default", "omp-set", "conv-default", "dense-threads-2", "conv-threads-1"],
)
def test_threads_is_what_the_run_computes_with_and_its_config_records_and_the_caller_keeps_its_own(
    flag: list[str], omp: str | None, expected: int, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    seen = tmp_path / "threads.txt"
    callers = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's own count, which the default keeps (torch's default on 2 cores)
    try:
        main(["fit", "--data.data_dir", str(tiny_mnist), "--data.val_size", "100", "--trainer.max_steps", "3",
              "--trainer.enable_progress_bar", "false", "--test_after_fit", "false", "--trainer.default_root_dir",
              str(tmp_path), "--trainer.callbacks+=tests.helpers.ThreadsSeen", "--trainer.callbacks.path", str(seen),
              *flag])  # fmt: skip
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(callers)
    assert seen.read_text().split() == [str(expected)] * 3
    assert yaml.safe_load((tmp_path / "version_0" / "config.yaml").read_text())["threads"] == expected


MAPPED_BLOCKS_AFTER_A_4MB_MALLOC = """
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype, libc.malloc.restype = MallInfo2, ctypes.c_void_p
if sys.argv[1] == "keep":
    from mnist_dense.runtime import keep_freed_memory
    keep_freed_memory()
before = libc.mallinfo2().hblks
libc.malloc(4 << 20)
print(libc.mallinfo2().hblks - before)
"""


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_evaluating_a_checkpoint_uses_the_normalization_it_was_trained_with(
    subcommand: str, tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A `standard` checkpoint evaluated without --data.normalization gets the figures its own run logged."""
    log_dir = fit_tiny(tiny_mnist, tmp_path / "fit", "--data.normalization", "standard")
    stage = "val" if subcommand == "validate" else "test"
    expected = logged(log_dir, f"{stage}_loss")[-1]  # the last epoch's validation; the test of the best epoch
    (best,) = (log_dir / "checkpoints").glob("epoch*.ckpt")
    ckpt = log_dir / "checkpoints" / "last.ckpt" if stage == "val" else best
    capsys.readouterr()
    cli = main([subcommand, "--ckpt_path", str(ckpt), "--data.data_dir", str(tiny_mnist), "--data.val_size", "100",
                "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert f"Using normalization 'standard', as {ckpt} was trained with." in capsys.readouterr().out
    assert float(cli.trainer.callback_metrics[f"{stage}_loss"]) == pytest.approx(expected, rel=1e-5)
