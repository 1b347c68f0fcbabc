"""The MNIST dense network of the Keras tutorial, as a PyTorch Lightning package."""

from mnist_dense.data import MNISTDataModule
from mnist_dense.model import DenseNet
from mnist_dense.module import MNISTClassifier

__all__ = ["DenseNet", "MNISTClassifier", "MNISTDataModule"]
