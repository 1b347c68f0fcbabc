"""Public Lightning callbacks: the run's pictures, predictions.csv, and a checkpoint on Ctrl-C or SIGTERM."""

from mnist_dense.callbacks.interrupt import SaveOnInterrupt
from mnist_dense.callbacks.plots import RunPlots
from mnist_dense.callbacks.predictions import PredictionCSVWriter

__all__ = ["PredictionCSVWriter", "RunPlots", "SaveOnInterrupt"]
