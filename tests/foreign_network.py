"""Network classes outside `mnist_dense.model`: a checkpoint naming one must be refused without importing this file.

Tests look for this module in `sys.modules` after loading such a checkpoint; Lightning's own loader would import it.
Three of the classes carry the names of this package's networks: the guard matches the whole class path, not a name.
"""

from torch import nn


class Tripwire(nn.Identity):
    """Any class would do: what matters is that this module is never imported by loading a checkpoint."""


class DenseNet(nn.Identity):
    """Named as the tutorial's network, and not it."""


class ClassicConvNet(nn.Identity):
    """Named as a conv net of this package, and not it."""


class GlobalPoolConvNet(nn.Identity):
    """Named as a conv net of this package, and not it."""
