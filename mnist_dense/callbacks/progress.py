"""`KerasProgressBar`: Keras' epoch lines, on Lightning's TQDM bar.

At each epoch's end one line stays, with the validation figures when the epoch validated:

    Epoch 1/5 - 3.1 s - loss: 0.2947 - accuracy: 0.9148 - val_loss: 0.1501 - val_accuracy: 0.9561

During an epoch, in a terminal, the bar shows the loss and accuracy of the epoch so far. Both are read from the
running state of the module's metric objects (`train_loss`, `train_acc`), when the bar redraws (every
`refresh_rate` steps, `get_metrics`) and once at the epoch's end: no `self.log` per step, no `Metric.compute()`,
nothing that waits for other processes (the bar lives on rank 0 only, so a collective call there would hang DDP).
In one process the line's figures are exactly those the module then logs for the epoch (metrics.csv); under DDP
they are rank 0's share of the epoch, and metrics.csv holds the figures over all processes. Where stdout is not a
terminal (a file, a pipe, CI, a notebook) no bar is drawn: no carriage-return frames, one line per epoch.
"""

from __future__ import annotations

import sys
import time
from numbers import Number
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

# The module's metric `{stage}_{name}` and how Keras names it.
KERAS_NAMES = (("loss", "loss"), ("acc", "accuracy"))


def running_value(metric: object) -> float | None:
    """A metric object's value over its updates so far, from its own state (no compute(), no sync); None if unknown.

    Computed as torchmetrics computes it (float32 division), so it equals what `compute()` would return.
    """
    if isinstance(metric, MeanMetric):
        state = metric.metric_state
        value = float(state["mean_value"] / state["weight"])
    elif isinstance(metric, MulticlassAccuracy) and metric.average == "micro" and metric.multidim_average == "global":
        state = metric.metric_state
        right = state["tp"].sum().float()
        value = float(right / (right + state["fn"].sum()))
    else:
        return None
    return value if value == value else None  # NaN: no update yet


def running_figures(pl_module: L.LightningModule) -> dict[str, float]:
    """The epoch-so-far figures of the module's training metric objects, by Keras' names."""
    figures = {}
    for name, keras_name in KERAS_NAMES:
        value = running_value(getattr(pl_module, f"train_{name}", None))
        if value is not None:
            figures[keras_name] = value
    return figures


def epoch_title(trainer: L.Trainer) -> str:
    """The epoch as Keras counts it, from 1: `Epoch 3/5`, or `Epoch 3` when the run has no epoch limit."""
    epochs = trainer.max_epochs
    return f"Epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs and epochs > 0 else "")


def epoch_line(title: str, seconds: float, figures: dict[str, float]) -> str:
    """`Epoch 1/5 - 3.1 s - loss: 0.2947 - accuracy: 0.9148`."""
    return " - ".join([title, f"{seconds:.1f} s", *(f"{name}: {value:.4f}" for name, value in figures.items())])


class KerasTqdm(Tqdm):
    """Lightning's Tqdm writing the bar's figures as Keras does: `loss: 0.3120 - accuracy: 0.9110`."""

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        text = " - ".join(f"{k}: {self.format_num(v) if isinstance(v, Number) else v}" for k, v in items.items())
        self.set_postfix_str(text, refresh=refresh)


class KerasProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar with Keras' epoch lines and running loss and accuracy; no frames outside a terminal.

    Args:
        refresh_rate: Redraw the bar every this many steps (Lightning's default, 1, costs more than a training step
            of this network at batch 32).
        frames: Draw the bar: None decides by whether stdout is a terminal; False prints the epoch lines only.
    """

    EPOCH_BAR_FORMAT = "{desc}: {n_fmt}/{total_fmt} |{bar:30}| {elapsed}<{remaining}{postfix}"

    def __init__(self, refresh_rate: int = 20, frames: bool | None = None) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.frames = frames
        self._draw = bool(frames)
        self._epoch_bar: Tqdm | None = None
        self._epoch_start = 0.0
        self._validated = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._draw = self.frames if self.frames is not None else sys.stdout.isatty()

    @property
    def is_disabled(self) -> bool:
        """No tqdm frames where nothing is drawn; the epoch lines are printed all the same (rank 0)."""
        return super().is_disabled or not self._draw

    def init_train_tqdm(self) -> Tqdm:
        """The current epoch's bar. leave=False: at the epoch's end its line is taken by the epoch's result line."""
        return KerasTqdm(
            desc=epoch_title(self.trainer),
            total=convert_inf(self.total_train_batches),
            position=(2 * self.process_position),
            disable=self.is_disabled,
            leave=False,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.EPOCH_BAR_FORMAT,
        )

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """What the bar shows: the epoch's running loss and accuracy, and anything logged with prog_bar=True."""
        if not self._draw:
            return {}
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the run's folder is printed elsewhere
        return {**items, **{name: f"{value:.4f}" for name, value in running_figures(pl_module).items()}}

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """Print above any bar being drawn (tqdm clears and redraws it), as a plain line otherwise."""
        Tqdm.write(sep.join(map(str, args)), file=kwargs.get("file", sys.stdout), end=kwargs.get("end", "\n"))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # No bar yet: each epoch draws its own from its start, so lines printed here (by other callbacks) stay whole.
        self.train_progress_bar = Tqdm(disable=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_bar = self.train_progress_bar = self.init_train_tqdm()
        self._epoch_start, self._validated = time.monotonic(), False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The epoch's line in place of its bar. Lightning calls this before the module's own on_train_epoch_end,
        so the metric objects still hold the whole epoch; the validation figures are logged already."""
        seconds = time.monotonic() - self._epoch_start
        self._close_epoch_bar()
        if not self.is_enabled:
            return
        figures = running_figures(pl_module)
        if self._validated:
            logged = trainer.callback_metrics
            for name, keras_name in KERAS_NAMES:
                if f"val_{name}" in logged:
                    figures[f"val_{keras_name}"] = float(logged[f"val_{name}"])
        self.print(epoch_line(epoch_title(trainer), seconds, figures))
        sys.stdout.flush()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close_epoch_bar()  # what is printed next (where it stopped, the error) starts on a line of its own

    def _close_epoch_bar(self) -> None:
        if self._epoch_bar is not None:
            self._epoch_bar.close()
            self._epoch_bar = None
