"""The trained network outside this repository: an ONNX (or torch.export) file, an HTTP service, a page to draw on.

`python -m mnist_dense export` and `python -m mnist_dense serve` land in `export.main` and `serve.main`;
both start from the module in `inference.py`, pixels 0-255 in and the tutorial's softmax out.
"""
