"""The MNIST dense network of the Keras tutorial, as a PyTorch Lightning package."""

import gc

# Importing torch, Lightning and torchmetrics makes some 650,000 objects, and Python's collector would walk the
# growing heap about 1,000 times on the way (six times all of it) to free almost nothing: about 0.5 s of CPU. It
# pauses for these imports only; the caller's setting comes back right after.
_collecting = gc.isenabled()
gc.disable()
try:
    from mnist_dense.data import MNISTDataModule
    from mnist_dense.model import DenseNet
    from mnist_dense.module import MNISTClassifier
finally:
    if _collecting:
        gc.enable()

__all__ = ["DenseNet", "MNISTClassifier", "MNISTDataModule"]
