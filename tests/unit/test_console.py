"""What a person coming from the Keras tutorial sees: the summary, one line per epoch, a quiet run, clear errors."""

from __future__ import annotations

import csv
import fcntl
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from mnist_dense import MNISTClassifier
from mnist_dense.callbacks import KerasProgressBar
from mnist_dense.callbacks.progress import running_figures
from mnist_dense.callbacks.summary import keras_summary
from mnist_dense.commands import main

# `Epoch 1/5 - 3.1 s - loss: 0.2947 - accuracy: 0.9148`, with ` - val_loss: ... - val_accuracy: ...` when validated
EPOCH_LINE = re.compile(
    r"^Epoch (\d+)/(\d+) - \d+\.\d s - loss: (\d\.\d{4}) - accuracy: (\d\.\d{4})"
    r"(?: - val_loss: (\d\.\d{4}) - val_accuracy: (\d\.\d{4}))?$"
)
SUMMARY_ROW = re.compile(r"^ (\S+) \((\w+)\) +(\(.*?\)) +([\d,]+)$")
NOISE = re.compile(r"warn|deprecat|tip:", re.IGNORECASE)


def summary_rows(table: str) -> list[tuple[str, ...]]:
    return [match.groups() for line in table.splitlines() if (match := SUMMARY_ROW.match(line))]


def totals(table: str) -> dict[str, str]:
    return dict(line.split(": ") for line in table.splitlines() if line.endswith(tuple("0123456789")) and ": " in line)


# --- the summary --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [128, 64])
def test_summary_shows_each_layer_its_output_shape_and_parameters_as_keras_does(hidden: int) -> None:
    table = keras_summary(MNISTClassifier(hidden=hidden))
    first, second = 784 * hidden + hidden, hidden * 10 + 10  # weights and biases of the two Dense layers
    assert summary_rows(table) == [
        ("net.layers.0", "Flatten", "(N, 784)", "0"),
        ("net.layers.1", "Linear", f"(N, {hidden})", f"{first:,}"),
        ("net.layers.2", "ReLU", f"(N, {hidden})", "0"),
        ("net.layers.3", "Linear", "(N, 10)", f"{second:,}"),
    ]
    total = f"{first + second:,}"
    assert totals(table) == {"Total params": total, "Trainable params": total, "Non-trainable params": "0"}
    if hidden == 128:
        assert total == "101,770"  # the tutorial's count
    assert "Metric" not in table and "train_acc" not in table  # metric objects are modules, not layers


class ConvClassifier(MNISTClassifier):
    """The same LightningModule given another network: nested blocks, a frozen layer, a 4-D output."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 13 * 13, 10),
        )
        self.net[0][0].requires_grad_(False)


def test_summary_lists_the_leaf_layers_of_any_network_the_module_is_given() -> None:
    table = keras_summary(ConvClassifier())
    assert summary_rows(table) == [
        ("net.0.0", "Conv2d", "(N, 4, 26, 26)", "40"),  # 4 filters of 3x3, and 4 biases
        ("net.0.1", "BatchNorm2d", "(N, 4, 26, 26)", "8"),
        ("net.1", "ReLU", "(N, 4, 26, 26)", "0"),
        ("net.2", "MaxPool2d", "(N, 4, 13, 13)", "0"),
        ("net.3", "Flatten", "(N, 676)", "0"),
        ("net.4", "Linear", "(N, 10)", "6,770"),
    ]
    assert totals(table) == {"Total params": "6,818", "Trainable params": "6,778", "Non-trainable params": "40"}


class MetricsFirst(L.LightningModule):
    """A module of your own whose metric object comes before its layers."""

    def __init__(self) -> None:
        super().__init__()
        self.accuracy = MulticlassAccuracy(num_classes=10)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        self.example_input_array = torch.zeros(1, 1, 28, 28)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_summary_leaves_out_a_metric_object_wherever_it_comes_and_lists_every_layer_after_it() -> None:
    table = keras_summary(MetricsFirst())
    assert summary_rows(table) == [("net.0", "Flatten", "(N, 784)", "0"), ("net.1", "Linear", "(N, 10)", "7,850")]


# --- the epoch lines -----------------------------------------------------------------------------------------------


def epoch_rows(log_dir: Path) -> dict[int, dict[str, str]]:
    """metrics.csv's logged figures per epoch, merged over its rows."""
    rows: dict[int, dict[str, str]] = {}
    with open(log_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            rows.setdefault(int(row["epoch"]), {}).update({k: v for k, v in row.items() if v})
    return rows


def fit_args(data: Path, root: Path, *extra: str) -> list[str]:
    return ["fit", "--data.data_dir", str(data), "--trainer.max_epochs", "2", "--test_after_fit", "false",
            "--plots.enabled", "false", "--trainer.default_root_dir", str(root), *extra]  # fmt: skip


@pytest.mark.parametrize("val_size", [0, 100])
def test_fit_prints_the_summary_then_one_line_per_epoch_with_the_epochs_figures(
    val_size: int, tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    main(fit_args(tiny_mnist, tmp_path, "--data.val_size", str(val_size)))
    out = capsys.readouterr().out
    assert "\r" not in out  # not a terminal: no bar frames
    assert "Layer (type)" in out and "Total params: 101,770" in out
    lines = [EPOCH_LINE.match(line) for line in out.splitlines() if line.startswith("Epoch")]
    assert all(lines) and [line.group(1, 2) for line in lines] == [("1", "2"), ("2", "2")]
    logged = epoch_rows(tmp_path / "version_0")
    for epoch, line in enumerate(lines):
        expected = [f"{float(logged[epoch][name]):.4f}" for name in ("train_loss", "train_acc")]
        if val_size:
            expected += [f"{float(logged[epoch][name]):.4f}" for name in ("val_loss", "val_acc")]
        assert [figure for figure in line.groups()[2:] if figure is not None] == expected
    assert not [w for w in recwarn if "across ranks is zero" in str(w.message)]  # no validation set, no loop


def test_an_epoch_line_shows_validation_figures_only_for_an_epoch_that_validated(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    main(fit_args(tiny_mnist, tmp_path, "--data.val_size", "100", "--trainer.max_epochs", "3",
                  "--trainer.check_val_every_n_epoch", "2"))  # fmt: skip
    lines = [EPOCH_LINE.match(line) for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert all(lines) and len(lines) == 3
    logged = epoch_rows(tmp_path / "version_0")
    assert [epoch for epoch, row in logged.items() if "val_loss" in row] == [1]  # the second epoch alone validated
    assert lines[0].group(5, 6) == lines[2].group(5, 6) == (None, None)  # not the second epoch's, carried over
    assert lines[1].group(5, 6) == tuple(f"{float(logged[1][name]):.4f}" for name in ("val_loss", "val_acc"))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], {"bar": "KerasProgressBar", "refresh_rate": 20, "summaries": ["KerasSummary"]}),
        (
            ["--trainer.callbacks+=TQDMProgressBar", "--trainer.callbacks.refresh_rate", "1"],
            {"bar": "TQDMProgressBar", "refresh_rate": 1, "summaries": ["KerasSummary"]},
        ),
        (
            ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"],
            {"bar": None, "refresh_rate": None, "summaries": []},
        ),
        (
            ["--trainer.callbacks+=ModelSummary", "--trainer.callbacks.max_depth", "2"],
            {"bar": "KerasProgressBar", "refresh_rate": 20, "summaries": ["ModelSummary"]},
        ),
    ],  # fmt: skip
    ids=["default", "your-own-bar", "both-off", "your-own-summary"],
)
def test_the_bar_and_the_summary_give_way_to_the_trainer_flags_and_your_own_callbacks(
    extra: list[str], expected: dict, tiny_mnist: Path, tmp_path: Path
) -> None:
    record = tmp_path / "callbacks.json"
    main([*fit_args(tiny_mnist, tmp_path, "--trainer.max_steps", "2"), *extra,
          "--trainer.callbacks+=tests.helpers.RecordCallbacks", "--trainer.callbacks.path", str(record)])  # fmt: skip
    assert {k: v for k, v in json.loads(record.read_text()).items() if k in expected} == expected


def test_a_runs_config_reruns_with_the_bar_and_the_summary_turned_off(tiny_mnist: Path, tmp_path: Path) -> None:
    """The defaults are not written into config.yaml (Lightning refuses a bar in callbacks with the bar flag off)."""
    main(fit_args(tiny_mnist, tmp_path / "first", "--trainer.max_steps", "2"))
    config = tmp_path / "first" / "version_0" / "config.yaml"
    assert "KerasProgressBar" not in config.read_text() and "KerasSummary" not in config.read_text()
    main(["fit", "--config", str(config), "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false"])  # fmt: skip
    assert (tmp_path / "first" / "version_1" / "checkpoints" / "last.ckpt").exists()


def test_no_validation_set_means_no_validation_loop_unless_you_ask_for_one(tiny_mnist: Path, tmp_path: Path) -> None:
    for name, extra in (("default", []), ("asked", ["--trainer.limit_val_batches", "1.0"])):
        record = tmp_path / f"{name}.json"
        args = [*fit_args(tiny_mnist, tmp_path / name, "--trainer.max_steps", "2"), *extra]
        main([*args, "--trainer.callbacks+=tests.helpers.RecordCallbacks", "--trainer.callbacks.path", str(record)])
        assert json.loads(record.read_text())["limit_val_batches"] == (0 if name == "default" else 1.0)


def test_the_bars_running_figures_come_from_metric_state_and_equal_what_compute_would_give(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = MNISTClassifier()
    generator = torch.Generator().manual_seed(0)
    for size in (32, 32, 7):  # batches of unequal size: the running mean is over images
        logits, labels = torch.randn(size, 10, generator=generator), torch.randint(0, 10, (size,), generator=generator)
        module.train_loss.update(F.cross_entropy(logits, labels).expand(size))
        module.train_acc.update(logits, labels)
    expected = {"loss": float(module.train_loss.compute()), "accuracy": float(module.train_acc.compute())}

    def refuse(*args, **kwargs):
        raise AssertionError("the bar called Metric.compute(): under DDP that waits for every process")

    for metric in (module.train_loss, module.train_acc):
        monkeypatch.setattr(metric, "compute", refuse)
    monkeypatch.setattr(torch.distributed, "all_gather", refuse)
    monkeypatch.setattr(torch.distributed, "all_reduce", refuse)
    assert running_figures(module) == expected
    trainer = SimpleNamespace(progress_bar_metrics={}, loggers=[])  # what Lightning's get_metrics reads
    shown = KerasProgressBar(frames=True).get_metrics(trainer, module)
    assert shown == {name: f"{value:.4f}" for name, value in expected.items()}


def test_in_a_terminal_the_bar_shows_the_running_figures_of_the_epoch_so_far(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    main([*fit_args(tiny_mnist, tmp_path, "--data.val_size", "100", "--trainer.max_epochs", "1"),
          "--trainer.callbacks+=mnist_dense.callbacks.KerasProgressBar", "--trainer.callbacks.frames", "true",
          "--trainer.callbacks.refresh_rate", "4"])  # fmt: skip
    out = capsys.readouterr().out
    frames = re.findall(r"Epoch 1/1: (\d+)/16 \|[^\r]*?loss: (\d\.\d{4}) - accuracy: (\d\.\d{4})", out)
    assert sorted({int(step) for step, _, _ in frames}) == [4, 8, 12, 16]
    assert "v_num" not in out
    logged = epoch_rows(tmp_path / "version_0")[0]
    last = [figures for step, *figures in frames if step == "16"][-1]
    assert last == [f"{float(logged[name]):.4f}" for name in ("train_loss", "train_acc")]  # the whole epoch
    assert len({tuple(figures) for _, *figures in frames}) > 1  # they move as the epoch goes
    # The bar is erased and its line taken by the epoch's line.
    assert re.search(r"\r +\rEpoch 1/1 - \d+\.\d s - loss: ", out)


# --- in a terminal and in a log file, as subprocesses ---------------------------------------------------------------


def terminal_screen(raw: str) -> list[str]:
    """The lines a terminal shows after `raw`: carriage return, newline, cursor up; other escapes ignored."""
    screen: list[list[str]] = [[]]
    row = column = 0
    escape = re.compile(r"\x1b\[(\d*)([A-Za-z])")
    i = 0
    while i < len(raw):
        if match := escape.match(raw, i):
            if match.group(2) == "A":
                row = max(row - int(match.group(1) or 1), 0)
            i = match.end()
            continue
        char, i = raw[i], i + 1
        if char == "\r":
            column = 0
        elif char == "\n":
            row += 1
        else:
            while len(screen) <= row:
                screen.append([])
            line = screen[row]
            line.extend(" " * (column + 1 - len(line)))
            line[column] = char
            column += 1
    return ["".join(line).rstrip() for line in screen]


def run_in_terminal(args: list[str], cwd: Path, timeout: float = 300) -> str:
    """`python -m mnist_dense ARGS` with stdout and stderr on a pseudo-terminal 120 columns wide; all it wrote."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "COLUMNS": "120"}
    process = subprocess.Popen([sys.executable, "-m", "mnist_dense", *args], stdin=subprocess.DEVNULL, stdout=slave,
                               stderr=slave, cwd=cwd, env=env)  # fmt: skip
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert process.wait(timeout=30) == 0
    return b"".join(chunks).decode()


# --- what the command is called, and a device this machine does not have ---------------------------------------------


@pytest.mark.parametrize(
    ("argv0", "name"), [("/x/mnist_dense/__main__.py", "python -m mnist_dense"), ("/x/bin/mnist-dense", "mnist-dense")]
)
def test_help_names_the_command_as_it_was_typed(
    argv0: str, name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0, "fit", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {name} [options] fit ")


CUDA, MPS = torch.cuda.is_available(), torch.backends.mps.is_available()
DEVICES = {"gpu": CUDA or MPS, "cuda": CUDA, "mps": MPS, "tpu": importlib.util.find_spec("torch_xla") is not None}


@pytest.mark.parametrize("accelerator", [name for name, present in DEVICES.items() if not present])
def test_an_accelerator_this_machine_lacks_is_one_error_line_naming_the_flag_and_the_fix(
    accelerator: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--trainer.accelerator", accelerator, "--trainer.default_root_dir", str(tmp_path)])
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: --trainer.accelerator {accelerator}: ") and "--trainer.accelerator cpu" in line
    assert not (tmp_path / "version_0").exists()  # refused before anything started


def test_a_figure_the_bar_cannot_read_from_metric_state_is_left_out() -> None:
    from torchmetrics import MeanMetric
    from torchmetrics.classification import MulticlassAccuracy

    from mnist_dense.callbacks.progress import running_value

    logits, labels = torch.eye(10)[[0, 1, 1, 2]], torch.tensor([0, 1, 2, 2])
    for metric in (MulticlassAccuracy(10, average="macro"), MulticlassAccuracy(10, multidim_average="samplewise")):
        assert running_value(metric) is None  # its running value is not the fraction right
    micro = MulticlassAccuracy(10, average="micro")
    micro.update(logits, labels)
    assert running_value(micro) == 0.75  # 3 of 4 right
    assert running_value(MeanMetric()) is None  # no update yet
    assert running_figures(SimpleNamespace(train_loss=MeanMetric())) == {}  # no accuracy metric: nothing to show


@pytest.mark.parametrize(("max_epochs", "title"), [(5, "Epoch 3/5"), (None, "Epoch 3"), (-1, "Epoch 3")])
def test_the_epoch_title_counts_from_1_and_names_the_limit_when_there_is_one(max_epochs, title: str) -> None:
    from mnist_dense.callbacks.progress import epoch_title

    assert epoch_title(SimpleNamespace(current_epoch=2, max_epochs=max_epochs)) == title


def test_the_summary_is_laid_out_in_keras_columns_and_widens_for_long_names() -> None:
    lines = keras_summary(MNISTClassifier()).splitlines()
    assert lines[0] == 'Model: "MNISTClassifier"'
    assert lines[1] == lines[-1] == "_" * 65 and lines[3] == lines[-5] == "=" * 65
    assert lines[2] == " " + "Layer (type)".ljust(28) + "Output Shape".ljust(26) + "Param #"
    assert lines[5] == " " + "net.layers.1 (Linear)".ljust(28) + "(N, 128)".ljust(26) + "100,480"
    assert lines[-4:-1] == ["Total params: 101,770", "Trainable params: 101,770", "Non-trainable params: 0"]

    class Scaled(MNISTClassifier):
        """A module holding a parameter of its own, and a layer with a long name."""

        def __init__(self) -> None:
            super().__init__()
            self.temperature = nn.Parameter(torch.ones(1))
            self.net.add_module("a_layer_with_a_name_longer_than_the_column", nn.Identity())

    wide = keras_summary(Scaled()).splitlines()
    name = "net.a_layer_with_a_name_longer_than_the_column (Identity)"
    assert wide[2].index("Output Shape") == 1 + len(name) + 3 and len(wide[1]) == 1 + len(name) + 3 + 26 + 7
    assert wide[-6] == " " + "(Scaled)".ljust(len(name) + 3) + "".ljust(26) + "1"


@pytest.mark.parametrize(
    ("size", "text"),
    [([1, 784], "(N, 784)"), ([[1, 4, 2], [1, 3]], "(N, 4, 2), (N, 3)"), ("?", "?"), ([], "?"), ([1, "x"], "?")],
)
def test_an_output_shape_is_written_as_keras_writes_it(size, text: str) -> None:
    from mnist_dense.callbacks.summary import shape_text

    assert shape_text(size) == text
