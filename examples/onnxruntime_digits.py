"""Use the exported network with onnxruntime and numpy alone: no torch, nothing of mnist_dense.

    python examples/onnxruntime_digits.py runs/version_0/checkpoints/last.onnx [data/MNIST/raw]

Reads the 10,000 MNIST test digits from the gzipped IDX files, feeds them as the graph expects them
(float32 (N, 1, 28, 28), pixels 0-255, white digit on black) and prints the accuracy.
"""

import gzip
import sys
from pathlib import Path

import numpy as np
import onnxruntime


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not): a 4-byte magic whose last byte is the number of dimensions, then the sizes."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main() -> None:
    model = sys.argv[1]
    raw = Path(sys.argv[2] if len(sys.argv) > 2 else "data/MNIST/raw")
    images = read_idx(raw / "t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None]  # (10000, 1, 28, 28)
    labels = read_idx(raw / "t10k-labels-idx1-ubyte.gz")
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"images": images})[0]  # (10000, 10), the tutorial's softmax
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    print(f"onnxruntime {onnxruntime.__version__}, {model}: accuracy {100 * accuracy:.2f}% on {len(labels):,} digits")
    print(f"first test digit: {int(probabilities[0].argmax())} with probability {probabilities[0].max():.4f}")


if __name__ == "__main__":
    main()
