"""Run (d) of `make bench`: the tutorial's own Keras program, timed from inside by a Keras callback.

The tutorial's code, as it stands: load MNIST, /255, Flatten -> Dense(128, relu) -> Dense(10, softmax), Adam,
sparse categorical cross-entropy, accuracy, `fit` 5 epochs at batch 32, `evaluate`. Two things differ, neither in
what is computed: MNIST is read from the bundled IDX files with numpy (Keras' own download is unreachable here and
would return the same uint8 arrays), and a callback prints time marks (`benchmarks.marks`) and each epoch's seconds.
`--seed` seeds Keras (the tutorial does not) so that runs compare.

Needs `tensorflow-cpu` (the `keras` extra) and numpy, nothing of this project's own dependencies:

    python -m benchmarks.keras_tutorial --data_dir data    # from the repository root
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

from benchmarks.marks import RESULT_PREFIX, mark, mark_exit

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path):
    """An IDX file (gzip or not) as a numpy uint8 array of the shape its header gives."""
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_data(data_dir: str):
    """What `tf.keras.datasets.mnist.load_data()` returns, from `<data_dir>/MNIST/raw`."""
    raw = Path(data_dir) / "MNIST" / "raw"
    splits = []
    for images, labels in FILES.values():
        paths = [raw / name if (raw / name).exists() else raw / f"{name}.gz" for name in (images, labels)]
        splits.append(tuple(read_idx(path) for path in paths))
    return tuple(splits)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--limit", type=int, default=None, help="training batches an epoch (tiny runs)")
    args = parser.parse_args(argv)
    mark_exit()

    import tensorflow as tf

    mark("imported")

    class Marks(tf.keras.callbacks.Callback):
        """The training, its epochs and the evaluation, marked as `benchmarks.baselines.ProcessMarks` marks fit."""

        def on_train_begin(self, logs=None):
            mark("train_start")

        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            seconds, cpu = time.perf_counter() - self.start, time.process_time() - self.cpu_start
            result = {"epoch": epoch, "train_seconds": seconds, "train_cpu_seconds": cpu}
            print(f"\n{RESULT_PREFIX}{json.dumps(result)}", flush=True)

        def on_train_end(self, logs=None):
            mark("train_end")

        def on_test_begin(self, logs=None):
            mark("test_start")

        def on_test_end(self, logs=None):
            mark("test_end")

    tf.keras.utils.set_random_seed(args.seed)
    # The tutorial, from here on
    (x_train, y_train), (x_test, y_test) = load_data(args.data_dir)
    if args.limit:
        x_train, y_train = x_train[: 32 * args.limit], y_train[: 32 * args.limit]
    x_train, x_test = x_train / 255.0, x_test / 255.0

    model = tf.keras.models.Sequential(
        [
            tf.keras.layers.Flatten(input_shape=(28, 28)),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, callbacks=[Marks()])
    loss, accuracy = model.evaluate(x_test, y_test, callbacks=[Marks()])
    print(f"{RESULT_PREFIX}{json.dumps({'which': 'keras', 'test_acc': accuracy})}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
