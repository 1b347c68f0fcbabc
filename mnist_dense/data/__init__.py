"""MNIST: the IDX files (`files`), which images each step sees (`sampling`), and the data module (`datamodule`)."""

from mnist_dense.data.datamodule import MNISTDataModule
from mnist_dense.data.files import MNISTDataError, load_split

__all__ = ["MNISTDataError", "MNISTDataModule", "load_split"]
