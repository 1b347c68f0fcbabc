"""The real command line: parse-time refusals in process, end-to-end runs as subprocesses."""

from __future__ import annotations

import csv
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
from mnist_dense.cli import MNISTDenseCLI
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


@pytest.mark.slow
def test_run_false_builds_a_fit_with_the_packages_hooks_and_runs_nothing(tmp_path: Path) -> None:
    """`MNISTDenseCLI(args, run=False)`: no subcommand, and every hook treats it as the fit it builds."""
    threads = torch.get_num_threads()
    cli = MNISTDenseCLI(args=["--data.val_size", "0", "--trainer.default_root_dir", str(tmp_path)], run=False)
    torch.set_num_threads(threads)
    assert cli.config.checkpoint.monitor is None  # no validation set: the latest epoch is kept as best
    assert cli.trainer.limit_val_batches == 0 and cli.trainer.max_epochs == 5
    assert cli.config.trainer.logger["init_args"]["save_dir"] == str(tmp_path)  # the run folder, as for fit
    assert cli.trainer.global_step == 0 and not list(tmp_path.iterdir())  # nothing trained, nothing written


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


@pytest.mark.slow
def test_validate_and_test_from_a_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "run"
    assert run_cli("fit", "--config", "configs/smoke.yaml", "--trainer.default_root_dir", str(root)).returncode == 0
    ckpt = root / "version_0" / "checkpoints" / "last.ckpt"
    result = run_cli("test", "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"test_acc\W+0\.(8|9)\d+", result.stdout)


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("collecting", [True, False])
def test_importing_the_package_leaves_the_callers_garbage_collector_as_it_was(collecting: bool) -> None:
    probe = f"import gc; gc.enable() if {collecting} else gc.disable(); import mnist_dense; print(gc.isenabled())"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == str(collecting), done.stderr[-2000:]


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


@pytest.mark.slow
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
