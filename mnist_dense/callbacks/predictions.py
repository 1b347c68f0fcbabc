"""`PredictionCSVWriter`: what `python -m mnist_dense predict` writes, one CSV row per image.

Columns: image (the test-set index, or your file's path), predicted digit, its probability (the
tutorial's softmax), the true label where known (the test set; empty for your own pictures),
error (why a file of yours could not be predicted; empty otherwise), the "not a digit" score, and
not_a_digit: yes or no by the threshold `calibrate` wrote into the checkpoint (empty without one).
Written to a temporary file and renamed, so a failed run leaves no half-written CSV.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from mnist_dense.atomic import replaced_atomically

COLUMNS = ("image", "predicted", "probability", "label", "error", "score", "not_a_digit")
CSV_NAME = "predictions.csv"


class PredictionCSVWriter(BasePredictionWriter):
    """Collects `predict_step`'s outputs and writes predictions.csv into the run's log folder."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module, predictions, batch_indices) -> None:
        folder = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast under DDP: every rank calls it
        if not trainer.is_global_zero:
            return
        outputs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        threshold = getattr(pl_module, "not_a_digit_threshold", None)
        rows = self.rows(outputs, getattr(trainer.datamodule, "own_images", None), threshold)
        path = folder / CSV_NAME
        with replaced_atomically(path) as partial, open(partial, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        errors = sum(1 for row in rows if row["error"])
        print(f"Predictions: {path} ({len(rows) - errors:,} images predicted, {errors} unreadable)")

    @staticmethod
    def rows(outputs: list[dict], own_images=None, threshold: float | None = None) -> list[dict]:
        """One row per image, in input order; with own images, the unusable files in their sorted place."""
        if outputs:
            probabilities = torch.cat([o["probabilities"] for o in outputs]).float().cpu()
            targets = torch.cat([o["target"] for o in outputs]).cpu()
            scores = torch.cat([o["score"] for o in outputs]).float().cpu() if "score" in outputs[0] else None
        else:
            probabilities, targets, scores = torch.zeros(0, 10), torch.zeros(0, dtype=torch.long), None
        scores = scores if scores is not None else torch.full((len(targets),), float("nan"))
        confidence, predicted = probabilities.max(dim=1)
        names = own_images.names if own_images is not None else [f"test[{i}]" for i in range(len(targets))]
        by_name = {
            name: {
                "image": name,
                "predicted": int(p),
                "probability": f"{float(c):.6f}",
                "label": int(t) if t >= 0 else "",
                "error": "",
                "score": f"{float(s):.3f}" if s == s else "",
                "not_a_digit": "" if threshold is None or s != s else ("yes" if s > threshold else "no"),
            }
            for name, p, c, t, s in zip(names, predicted, confidence, targets, scores, strict=True)
        }
        if own_images is None:
            return list(by_name.values())
        for name, error in own_images.failures.items():
            by_name[name] = {**dict.fromkeys(COLUMNS, ""), "image": name, "error": error}
        return [by_name[name] for name in own_images.order]
