"""Public Lightning callbacks: Keras' summary and epoch lines, the run's pictures, predictions.csv, and a checkpoint
on Ctrl-C or SIGTERM."""

from mnist_dense.callbacks.interrupt import SaveOnInterrupt
from mnist_dense.callbacks.plots import RunPlots
from mnist_dense.callbacks.predictions import PredictionCSVWriter
from mnist_dense.callbacks.progress import KerasProgressBar
from mnist_dense.callbacks.summary import KerasSummary

__all__ = ["KerasProgressBar", "KerasSummary", "PredictionCSVWriter", "RunPlots", "SaveOnInterrupt"]
