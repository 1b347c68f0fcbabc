"""`make bench` runs end to end (tiny) and writes its table and raw figures; it asserts no time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench, keras_tutorial, marks, step_costs
from mnist_dense import MNISTClassifier, cli
from mnist_dense.checkpoints import read_checkpoint
from mnist_dense.data import load_split
from tests.conftest import BUNDLED_DATA


@pytest.mark.slow
def test_benchmark_runs_tiny_and_writes_a_table_and_raw_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench"
    bench.main(
        ["--epochs", "1", "--limit", "16", "--repeats", "1", "--only", "a,c", "--data_dir", str(BUNDLED_DATA)]
        + ["--out_dir", str(out)]
    )
    table = (out / "latest.md").read_text()
    assert table == capsys.readouterr().out.strip() + "\n"
    assert "| (a) `python -m mnist_dense fit` |" in table and "| (c) a plain PyTorch loop" in table
    assert "(b)" not in table and "load average" in table
    for target in ("per epoch a/c = ", "(target <= 2.3: ", "whole process a/c = ", "(target <= 2.0: "):
        assert target in table
    assert "| run | imports | set-up | training | test | pictures | shutdown | whole process |" in table
    assert "peak memory of a = " in table and "accuracy |a - c| = " in table
    (raw_path,) = out.glob("*.json")
    raw = json.loads(raw_path.read_text())
    for run in raw["runs"]:  # every phase was marked by the process itself; together they are the whole process
        split = run["phases"]
        assert sum(p["seconds"] for p in split.values()) == pytest.approx(run["process_seconds"])
        assert sum(p["cpu_seconds"] for p in split.values()) == pytest.approx(run["process_cpu_seconds"])
        drawn = ["pictures"] if run["which"] == "a" else []  # the plain loop draws nothing
        for phase in ("imports", "set-up", "training", "test", "shutdown", *drawn):
            assert split[phase]["seconds"] > 0, phase
        assert run["which"] == "a" or split["pictures"]["seconds"] == 0
    # (a) and (c) take the same steps (a prints two decimals of a percent)
    assert round(raw["runs"][0]["test_acc"], 4) == round(raw["runs"][1]["test_acc"], 4)
    assert [r["which"] for r in raw["runs"]] == ["a", "c"]
    for run in raw["runs"]:
        assert len(run["epoch_seconds"]) == len(run["epoch_cpu_seconds"]) == 1 and run["epoch_seconds"][0] > 0
        assert run["epoch_cpu_seconds"][0] > 0 and run["process_cpu_seconds"] > 0
        assert 0.1 < run["test_acc"] <= 1 and 100 < run["peak_rss_mb"] < 10_000
    # (a) ran with its progress bar on, as a user runs it (into a file: its epoch line), and the timer's line was found
    assert "Epoch 1/1 - " in (out / raw["time"] / "a0" / "output.log").read_text()


def test_the_keras_run_is_left_out_or_refused_where_tensorflow_does_not_import(capsys: pytest.CaptureFixture) -> None:
    if bench.keras_interpreter(sys.executable)[0]:
        pytest.skip("tensorflow imports here")
    python, why_not = bench.keras_interpreter(None)
    assert python is None and "--keras_python PATH" in why_not and ".[keras]" in why_not
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--only", "a,d", "--keras_python", sys.executable])
    assert exit_info.value.code == 2 and "cannot import tensorflow" in capsys.readouterr().err


def test_the_keras_program_reads_the_bundled_mnist_as_the_package_does() -> None:
    (x_train, y_train), (x_test, y_test) = keras_tutorial.load_data(str(BUNDLED_DATA))
    assert x_train.shape == (60_000, 28, 28) and x_test.shape == (10_000, 28, 28) and x_train.dtype.name == "uint8"
    for split, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        expected_images, expected_labels = load_split(BUNDLED_DATA, split)
        assert torch.equal(torch.from_numpy(images.copy()), expected_images)
        assert torch.equal(torch.from_numpy(labels.astype("int64")), expected_labels)


def test_marks_split_a_process_into_phases_that_add_up() -> None:
    moments = [("made", 3.0, 2.5), ("train_start", 3.5, 3.0), ("train_end", 13.5, 13.0), ("fit_end", 13.6, 13.1),
               ("test_setup", 14.0, 13.5), ("test_start", 14.1, 13.6), ("test_end", 14.4, 13.9),
               ("test_teardown", 15.0, 14.5), ("exit", 15.1, 14.6)]  # fmt: skip
    results = [{"mark": name, "wall": 100 + wall, "cpu": cpu} for name, wall, cpu in moments]
    split = marks.phases(results, started=100.0, ended=116.0, cpu_seconds=15.0)
    expected = {"imports": 3.0, "set-up": 0.5, "training": 10.1, "test": 0.5, "pictures": 1.0, "shutdown": 0.9}
    assert {phase: round(p["seconds"], 6) for phase, p in split.items()} == expected
    assert split["shutdown"]["cpu_seconds"] == pytest.approx(0.4) and split["imports"]["cpu_seconds"] == 2.5
    with pytest.raises(ValueError, match="not one of"):
        marks.mark("lunch")


def test_benchmark_refuses_an_unknown_run_name(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--only", "a,x"])
    assert exit_info.value.code == 2 and "--only 'a,x'" in capsys.readouterr().err


@pytest.mark.slow
def test_step_costs_runs_its_variants_through_the_cli_and_reports_each_against_default(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    step_costs.main(
        ["--only", "default,forloop,log_steps", "--repeats", "1", "--limit", "8", "--threads", "1"]
        + ["--data_dir", str(BUNDLED_DATA), "--out_dir", str(tmp_path)]
    )
    printed = capsys.readouterr().out
    assert "| default | " in printed and "| forloop | " in printed and "| log_steps | " in printed
    # each variant really ran what it names: the package's Adam is fused, the forloop run's is not
    for name, fused in (("default", True), ("forloop", False)):
        checkpoint = read_checkpoint(tmp_path / f"{name}0" / "version_0" / "checkpoints" / "last.ckpt")
        assert checkpoint["optimizer_states"][0]["param_groups"][0]["fused"] is fused


def test_step_costs_refuses_an_unknown_variant(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        step_costs.main(["--only", "default,warp_speed"])
    assert exit_info.value.code == 2 and "warp_speed" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    ("factors", "net"),
    [(["fused", "nvml", "running_figures"], None), (["threads", "contiguous"], "GlobalPoolConvNet")],
    ids=["dense", "conv"],
)
def test_step_costs_interleaved_times_both_sides_of_each_factor_in_one_fit(
    factors: list[str], net: str | None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    step_costs.main(
        ["--interleaved", "--only", ",".join(factors), "--limit", "120", "--data_dir", str(BUNDLED_DATA)]
        + ["--out_dir", str(tmp_path)]
        + (["--net", net] if net else [])
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(tuple(f"| {f}" for f in factors))]
    assert len(rows) == len(factors)
    for row in rows:
        package, other = (float(cell) for cell in row.split("|")[2:4])
        assert package > 0 and other > 0
    assert cli.MNISTClassifier is MNISTClassifier  # the CLI is left as it was
    for factor in factors:  # each fit trained the network it was asked for
        checkpoint = read_checkpoint(tmp_path / f"interleaved_{factor}" / "version_0" / "checkpoints" / "last.ckpt")
        assert (checkpoint["hyper_parameters"]["net"] or {}).get("class_path") == (net and f"mnist_dense.model.{net}")


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_step_costs_times_evaluation_batch_sizes(capsys: pytest.CaptureFixture) -> None:
    step_costs.main(["--eval_batches", "100,500", "--net", "ClassicConvNet", "--repeats", "1"]
                    + ["--data_dir", str(BUNDLED_DATA)])  # fmt: skip
    table = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert table[0][1].strip() == "ClassicConvNet: batch size"
    assert [row[1].strip() for row in table[2:]] == ["100", "500"]
    assert all(float(cell) > 0 for row in table[2:] for cell in row[2:4])
