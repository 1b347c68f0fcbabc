"""How far a network's probabilities are from its accuracy, and temperature scaling to bring them closer.

A network that says 0.9 should be right 9 times in 10. The expected calibration error (ECE, torchmetrics'
`MulticlassCalibrationError`, 15 equal-width bins of the top probability, L1) measures the gap; the reliability
diagram draws it, bin by bin. Temperature scaling (Guo et al., 2017) divides the logits by one number T fitted to
minimize the cross-entropy on held-out data: the predicted digit never changes, only how sure the network says it
is. `python -m mnist_dense calibrate --ckpt_path CKPT` fits T on the run's own validation split (never the test
set) and writes it into the checkpoint, where `predict`, `serve`, `export` and the page find it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.classification import MulticlassCalibrationError

from mnist_dense.constants import NUM_CLASSES

BINS = 15
DIGITS_KEPT = 0.99  # the share of validation digits classified right that the "not a digit" threshold keeps
CALIBRATION_KEY = "calibration"  # in the checkpoint: {"temperature", "validation_images", "val_ece", ...}


def calibration_error(probabilities: Tensor, labels: Tensor, bins: int = BINS) -> float:
    """Expected calibration error: the top probability against accuracy, over equal-width bins, weighted by count."""
    metric = MulticlassCalibrationError(num_classes=probabilities.shape[1], n_bins=bins, norm="l1")
    return float(metric(probabilities, labels))


def bin_sums(probabilities: Tensor, labels: Tensor, bins: int = BINS) -> Tensor:
    """Per equal-width bin of the top probability ((0, 1/bins] is the first, as torchmetrics bins): (images, sum of
    confidences, images right), a (bins, 3) tensor. Sums add up across batches and processes."""
    confidence, predicted = probabilities.max(dim=1)
    which = (confidence * bins).ceil().clamp(1, bins).long() - 1
    sums = torch.zeros(bins, 3, dtype=torch.float64, device=probabilities.device)
    for column, values in enumerate((torch.ones_like(confidence), confidence, (predicted == labels).to(confidence))):
        sums[:, column].index_add_(0, which, values.double())
    return sums


def reliability_bins(sums: Tensor) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, images) of each bin that holds images."""
    return [(float(c / n), float(r / n), int(n)) for n, c, r in sums.tolist() if n > 0]


def error_of(sums: Tensor) -> float:
    """The expected calibration error from `bin_sums`: each bin's |confidence - accuracy|, weighted by its images."""
    return float((sums[:, 1] - sums[:, 2]).abs().sum() / sums[:, 0].sum())


def reliability_figure(sums: Tensor, title: str = "") -> Figure:
    """Accuracy against confidence per bin (a calibrated network lies on the diagonal), and how many images each
    bin holds; from `bin_sums`."""
    fig = Figure(figsize=(6, 7), layout="tight")
    top, counts = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    rows = reliability_bins(sums)
    width = 1 / len(sums)
    confidence = [c for c, _, _ in rows]
    top.bar(confidence, [a for _, a, _ in rows], width=width * 0.9, alpha=0.7, label="accuracy")
    top.plot([0, 1], [0, 1], "k--", label="calibrated")
    top.plot(confidence, confidence, "r.", label="confidence")
    images = int(sums[:, 0].sum())
    top.set_title(f"{title}ECE {100 * error_of(sums):.2f}% over {len(sums)} bins, {images:,} images".strip())
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(loc="upper left")
    counts.bar(confidence, [n for _, _, n in rows], width=width * 0.9)
    counts.set_yscale("log")
    counts.set_xlabel("confidence (the top probability)")
    counts.set_ylabel("images")
    return fig


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The T > 0 that minimizes the cross-entropy of logits / T (LBFGS on log T, as in Guo et al.)."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    logits, labels = logits.detach().double(), labels.detach()

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.double().exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def energy(logits: Tensor) -> Tensor:
    """The "not a digit" score: -logsumexp of the logits (Liu et al., 2020), higher for pictures less like the digits
    the network learned; a softmax normalizes this size of the logits away."""
    return -torch.logsumexp(logits, dim=1)


def not_a_digit_threshold(logits: Tensor, labels: Tensor, kept: float = DIGITS_KEPT) -> float:
    """The score below which `kept` of the digits the network classifies right lie (validation digits only)."""
    right = logits.argmax(dim=1) == labels
    return float(torch.quantile(energy(logits[right]).double(), kept))


def threshold_of(checkpoint: dict) -> float | None:
    """The checkpoint's "not a digit" threshold on `energy`, None when `calibrate` has not set one."""
    found = checkpoint.get(CALIBRATION_KEY, {}).get("not_a_digit", {}).get("threshold")
    return None if found is None else float(found)


def temperature_of(checkpoint: dict) -> float:
    """The checkpoint's fitted temperature, 1.0 (the softmax as trained) when it has none."""
    return float(checkpoint.get(CALIBRATION_KEY, {}).get("temperature", 1.0))


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mnist_dense calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True, help="A checkpoint of `fit` with a validation split, or `last`.")
    parser.add_argument("--output", type=Path, help="Where to write the calibrated checkpoint (default: in place).")
    parser.add_argument(
        "--data.data_dir", dest="data_dir", default=None, help="Folder holding MNIST/raw (default: the run's)."
    )
    return parser.parse_args(args)


@torch.inference_mode()
def logits_of(model, images: Tensor, normalization: str) -> Tensor:
    from mnist_dense.scaling import to_model_input

    return torch.cat([model.net(to_model_input(chunk, normalization)) for chunk in images.split(2000)])


def main(args: list[str]) -> None:
    from mnist_dense.checkpoints import AtomicCheckpointIO, CheckpointError, read_checkpoint, trained_normalization
    from mnist_dense.data import MNISTDataError, load_split
    from mnist_dense.data.files import default_data_dir
    from mnist_dense.data.sampling import split_indices
    from mnist_dense.deploy.inference import checkpoint_path, fail
    from mnist_dense.module import MNISTClassifier

    options = parse_args(args)
    try:
        path = checkpoint_path(options.ckpt_path)
        checkpoint = read_checkpoint(path)
        data = checkpoint.get("datamodule_hyper_parameters", {})
        val_size = int(data.get("val_size", 0))
        if val_size == 0:
            raise CheckpointError(
                f"Checkpoint {path} was trained on all 60,000 training images (--data.val_size 0, the tutorial's"
                " choice), so no image is left that the network has not seen, and the test set must not be used"
                " to fit: train with a validation split, e.g. `python -m mnist_dense fit --data.val_size 5000`,"
                " then calibrate that run's checkpoint."
            )
        saved = data.get("data_dir")  # the run's folder, if it is still there (a run from another machine's is not)
        data_dir = options.data_dir or (saved if saved and Path(saved).is_dir() else default_data_dir())
        normalization = trained_normalization(checkpoint, "unit")
        model = MNISTClassifier.load_from_checkpoint(path, map_location="cpu").eval()
        images, labels = load_split(data_dir, "train")
        _, val_index = split_indices(len(labels), val_size)
        val_logits = logits_of(model, images[val_index][:, None].float(), normalization)
        val_labels = labels[val_index]
        test_images, test_labels = load_split(data_dir, "test")
    except (CheckpointError, MNISTDataError) as err:
        fail(err)
    test_logits = logits_of(model, test_images[:, None].float(), normalization)
    temperature = fit_temperature(val_logits, val_labels)
    before = calibration_error(test_logits.softmax(dim=1), test_labels)
    after = calibration_error((test_logits / temperature).softmax(dim=1), test_labels)
    threshold = not_a_digit_threshold(val_logits, val_labels)
    checkpoint[CALIBRATION_KEY] = {
        "temperature": temperature,
        "validation_images": len(val_labels),
        "val_ece": calibration_error((val_logits / temperature).softmax(dim=1), val_labels),
        "not_a_digit": {"score": "energy", "threshold": threshold, "digits_kept": DIGITS_KEPT},
    }
    target = options.output or path
    AtomicCheckpointIO().save_checkpoint(checkpoint, target)  # as fit writes checkpoints: beside, fsync, rename
    folder = target.parent
    for name, scale in (("reliability_uncalibrated.png", 1.0), ("reliability_calibrated.png", temperature)):
        fig = reliability_figure(
            bin_sums((test_logits / scale).softmax(dim=1), test_labels), title=f"T = {scale:.3f}: "
        )
        fig.savefig(folder / name, dpi=100)
    print(
        f"Temperature {temperature:.3f}, fitted on the run's {len(val_labels):,} validation images; written into"
        f" {target}. Test set ({len(test_labels):,} images, {NUM_CLASSES} digits): expected calibration error"
        f" {100 * before:.2f}% before, {100 * after:.2f}% after (15 bins). Reliability diagrams:"
        f" {folder / 'reliability_uncalibrated.png'}, {folder / 'reliability_calibrated.png'}."
    )
    print(
        f"Not a digit: a picture whose score (-logsumexp of the logits) is above {threshold:.3f}, which"
        f" {100 * DIGITS_KEPT:.0f}% of the validation digits the network classifies right stay below."
    )
