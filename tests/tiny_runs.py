"""A short in-process `fit` on the tiny fake digits (the `tiny_mnist` fixture patches the module, so no subprocess)."""

from __future__ import annotations

import csv
from pathlib import Path

from mnist_dense.commands import main


def train_tiny(data_dir: Path, root: Path, *extra: str) -> None:
    """Two epochs on 500 tiny training digits (then the test set once), into the run folder `root`."""
    main(
        [
            "fit",
            "--data.data_dir", str(data_dir),
            "--data.val_size", "100",
            "--trainer.max_epochs", "2",
            "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(root),
            *extra,
        ]
    )  # fmt: skip


def fit_tiny(data_dir: Path, root: Path, *extra: str) -> Path:
    """`train_tiny` with the default CSV logger; returns the run's log folder."""
    train_tiny(data_dir, root, *extra)
    (log_dir,) = root.glob("version_*")
    return log_dir


def logged(log_dir: Path, name: str) -> list[float]:
    """Every value of one metric in the run's metrics.csv, in order."""
    with open(log_dir / "metrics.csv") as f:
        return [float(row[name]) for row in csv.DictReader(f) if row.get(name)]
