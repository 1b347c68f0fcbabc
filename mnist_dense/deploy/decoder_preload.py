"""What the picture decoders' forkserver imports before it forks any decoder (`decoding.Decoder.start`).

Everything a decoder needs (torch, Pillow, this package) is imported once here and shared with every decoder
copy-on-write; `gc.freeze()` then keeps those objects out of every later collection, as Python's documentation
advises before forking: collections in the decoders do not touch (and copy) the shared pages, and the
forkserver's own exit skips collecting them (with torch imported that took seconds on a loaded machine).
"""

import gc

import mnist_dense.deploy.decoding  # noqa: F401

gc.freeze()
