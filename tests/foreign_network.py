"""A network class outside `mnist_dense.model`: a checkpoint naming it must be refused without importing this file.

Tests look for this module in `sys.modules` after loading such a checkpoint; Lightning's own loader would import it.
"""

from torch import nn


class Tripwire(nn.Identity):
    """Any class would do: what matters is that this module is never imported by loading a checkpoint."""
