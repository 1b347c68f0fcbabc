"""`make bench` and `benchmarks.step_costs` end to end (tiny): each writes its table; no time is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench, step_costs
from mnist_dense import MNISTClassifier, cli
from mnist_dense.checkpoints import read_checkpoint
from tests.conftest import BUNDLED_DATA


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


@pytest.mark.usefixtures("one_thread")
def test_step_costs_times_evaluation_batch_sizes(capsys: pytest.CaptureFixture) -> None:
    step_costs.main(["--eval_batches", "100,500", "--net", "ClassicConvNet", "--repeats", "1"]
                    + ["--data_dir", str(BUNDLED_DATA)])  # fmt: skip
    table = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert table[0][1].strip() == "ClassicConvNet: batch size"
    assert [row[1].strip() for row in table[2:]] == ["100", "500"]
    assert all(float(cell) > 0 for row in table[2:] for cell in row[2:4])
