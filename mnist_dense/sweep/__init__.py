"""`python -m mnist_dense sweep`, an Optuna search of `fit`'s settings, read top to bottom:

- `space`: the space file (fit flags and their values), checked with fit's own parser;
- `study`: the storage, sampler and pruner, the trials (each an ordinary in-process `fit`), lost workers, signals;
- `report`: trials.md, best.yaml and retrain.yaml, Optuna's plots, the retraining;
- `command`: sweep's options (`--config` too) and `main(args)`, which ties them together.
"""

from mnist_dense.sweep.command import main

__all__ = ["main"]
