"""`KerasSummary`: the network as Keras' `model.summary()` shows it, printed at the start of `fit`.

One row per layer (a module without children, or one holding parameters of its own) with its output shape and
its parameters, then the totals. Metric objects are child modules of a LightningModule but not layers: they are
left out. Built on Lightning's own `summarize(module, max_depth=-1)`, which runs the module's
`example_input_array` through it (the data module's batch hooks included) to record each layer's output size.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities.model_summary import ModelSummary as LightningSummary
from lightning.pytorch.utilities.model_summary import summarize
from torch import nn
from torch.nn.parameter import UninitializedParameter
from torchmetrics import Metric

# Keras' table: 65 characters wide, output shapes from column 29, parameter counts from column 55.
RULE_WIDTH, NAME_WIDTH, SHAPE_WIDTH = 65, 28, 26


def own_parameters(module: nn.Module) -> int:
    """Parameters a module holds itself, not through its children (lazy ones not yet sized count 0)."""
    return sum(p.numel() for p in module.parameters(recurse=False) if not isinstance(p, UninitializedParameter))


def shape_text(size: object) -> str:
    """Lightning's recorded output size, batch axis first, as Keras writes it: [1, 784] -> (N, 784)."""
    if isinstance(size, list) and size and all(isinstance(d, int) for d in size):
        return "(" + ", ".join(["N", *map(str, size[1:])]) + ")"
    if isinstance(size, list) and size and all(isinstance(s, list) for s in size):
        return ", ".join(shape_text(s) for s in size)  # a layer with several outputs
    return "?"  # not reached by the example input, or not a tensor


def layer_rows(module: L.LightningModule, summary: LightningSummary) -> list[tuple[str, str, int]]:
    """(name (type), output shape, parameters) for each layer of the module, metric objects left out."""
    modules = dict(module.named_modules())
    metrics = [name for name, m in modules.items() if isinstance(m, Metric)]
    rows = []
    for name, kind, size in zip(summary.layer_names, summary.layer_types, summary.out_sizes, strict=True):
        if any(name == metric or name.startswith(f"{metric}.") for metric in metrics):
            continue
        layer = modules[name]
        if next(layer.children(), None) is None or own_parameters(layer):
            rows.append((f"{name} ({kind})", shape_text(size), own_parameters(layer)))
    if own_parameters(module):  # parameters held by the LightningModule itself
        rows.append((f"({type(module).__name__})", "", own_parameters(module)))
    return rows


def keras_summary(module: L.LightningModule) -> str:
    """The table Keras' `model.summary()` prints, for any LightningModule (shapes need its `example_input_array`)."""
    summary = summarize(module, max_depth=-1)
    rows = layer_rows(module, summary)
    total, trainable = summary.total_parameters, summary.trainable_parameters
    name_width = max([NAME_WIDTH - 3, *(len(name) for name, _, _ in rows)]) + 3
    shape_width = max([SHAPE_WIDTH - 3, *(len(shape) for _, shape, _ in rows)]) + 3
    width = max(RULE_WIDTH, 1 + name_width + shape_width + len("Param #"))
    lines = [
        f'Model: "{type(module).__name__}"',
        "_" * width,
        f" {'Layer (type)':<{name_width}}{'Output Shape':<{shape_width}}Param #",
        "=" * width,
        *(f" {name:<{name_width}}{shape:<{shape_width}}{count:,}" for name, shape, count in rows),
        "=" * width,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        "_" * width,
    ]
    return "\n".join(lines)


class KerasSummary(ModelSummary):
    """Lightning's `ModelSummary` callback printing Keras' table: layers, output shapes, parameters.

    Being a `ModelSummary`, it replaces the Trainer's default one; the CLI adds it unless
    `--trainer.enable_model_summary false` or a summary callback of your own. Printed by rank 0 only.
    """

    def __init__(self) -> None:
        super().__init__(max_depth=-1)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            print(keras_summary(pl_module), flush=True)
