"""`make bench` runs end to end (tiny) and writes its table and raw figures; it asserts no time."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench, keras_tutorial, marks, step_costs
from mnist_dense.data import load_split
from tests.conftest import BUNDLED_DATA


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


def test_step_costs_refuses_an_unknown_variant(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        step_costs.main(["--only", "default,warp_speed"])
    assert exit_info.value.code == 2 and "warp_speed" in capsys.readouterr().err


def report_priority(queue) -> None:  # module level: a spawned process imports it
    from benchmarks.hostile import lowest_priority

    lowest_priority()
    autogroup = Path("/proc/self/autogroup")
    queue.put((os.getsid(0) == os.getpid(), os.nice(0), autogroup.read_text() if autogroup.exists() else None))


def test_the_attackers_take_the_lowest_priority_in_a_scheduling_group_of_their_own() -> None:
    """nice 19 alone would not do where the kernel schedules each session as one group (autogroup)."""
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    process = spawn.Process(target=report_priority, args=(queue,))
    process.start()
    leads_its_session, nice, autogroup = queue.get(timeout=60)
    process.join(60)
    assert leads_its_session and nice == 19
    assert autogroup is None or autogroup.split()[-2:] == ["nice", "19"]
