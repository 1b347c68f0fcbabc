"""`python -m benchmarks.not_a_digit --ckpt_path A B`: how well each score tells non-digits from digits.

For each checkpoint (trained with a validation split) and each score of `mnist_dense.non_digits`: the threshold
that still answers 99% of the validation digits the network classifies right as digits (never set on what is
reported), then, at that threshold, the share of non-digits answered "not a digit" (per kind and overall, on a set
drawn with another seed than anything tuned), the AUROC of test digits against non-digits, the share of the test
digits classified right that stay digits, and the same for test digits drawn as photos on paper.
"""

from __future__ import annotations

import argparse
import io
import sys

import torch
from torchmetrics.functional.classification import binary_auroc

from benchmarks.docs_tables import load_average, write_stamped
from mnist_dense.calibration import calibration_error, fit_temperature
from mnist_dense.checkpoints import read_checkpoint, trained_normalization
from mnist_dense.data import load_split
from mnist_dense.data.files import default_data_dir
from mnist_dense.data.sampling import split_indices
from mnist_dense.module import MNISTClassifier
from mnist_dense.non_digits import METHODS, FeatureDistance, non_digit_pictures, penultimate, scores
from mnist_dense.pictures import decode_picture, prepare_digit
from mnist_dense.scaling import to_model_input
from mnist_dense.show import draw_on_paper

ACCEPT = 0.99
REPORT_SEED = 1


@torch.inference_mode()
def forward(net, images: torch.Tensor, normalization: str) -> tuple[torch.Tensor, torch.Tensor]:
    logits, features = [], []
    for chunk in images.split(2000):
        inputs = to_model_input(chunk[:, None].float(), normalization)
        logits.append(net(inputs))
        features.append(penultimate(net, inputs))
    return torch.cat(logits), torch.cat(features)


def photos(images: torch.Tensor, count: int) -> torch.Tensor:
    """Test digits drawn on paper and photographed (`show --on_paper`), prepared as predict prepares a JPEG."""
    from torchvision.io import encode_jpeg

    prepared = []
    for i in range(count):
        jpeg = encode_jpeg(draw_on_paper(images[i], i), quality=90).numpy().tobytes()
        prepared.append(prepare_digit(decode_picture(io.BytesIO(jpeg).getvalue())))
    return torch.stack(prepared)


def measure(path: str, name: str, non_digits, data_dir: str) -> tuple[list[str], str]:
    checkpoint = read_checkpoint(path)
    val_size = int(checkpoint.get("datamodule_hyper_parameters", {}).get("val_size", 0))
    normalization = trained_normalization(checkpoint, "unit")
    net = MNISTClassifier.load_from_checkpoint(path, map_location="cpu").net.eval()
    images, labels = load_split(data_dir, "train")
    train_index, val_index = split_indices(len(labels), val_size)
    train_logits, train_features = forward(net, images[train_index], normalization)
    distance = FeatureDistance.fit(train_features, labels[train_index].long())
    test_images, test_labels = load_split(data_dir, "test")
    sets = {
        "val": (images[val_index], labels[val_index]),
        "test": (test_images, test_labels),
        "non": (non_digits.images, None),
        "photos": (photos(test_images, 300), test_labels[:300]),
    }
    found = {}
    for part, (pixels, truth) in sets.items():
        logits, features = forward(net, pixels, normalization)
        right = None if truth is None else logits.argmax(dim=1) == truth.long()
        found[part] = (scores(logits, features, distance), right, logits)
    rows = []
    kinds = sorted(set(non_digits.kinds))
    for method in METHODS:
        val_scores, val_right = found["val"][0][method], found["val"][1]
        threshold = torch.quantile(val_scores[val_right].double(), ACCEPT).item()
        test_scores, test_right = found["test"][0][method], found["test"][1]
        non_scores = found["non"][0][method]
        rejected = non_scores > threshold
        per_kind = [float(rejected[[k == kind for k in non_digits.kinds]].float().mean()) for kind in kinds]
        auroc = binary_auroc(
            torch.cat([test_scores, non_scores]),
            torch.cat([torch.zeros(len(test_scores)), torch.ones(len(non_scores))]).long(),
        )
        kept = float((test_scores[test_right] <= threshold).float().mean())
        photo_scores, photo_right = found["photos"][0][method], found["photos"][1]
        photo_kept = float((photo_scores <= threshold).float().mean())
        photo_right_kept = float(((photo_scores <= threshold) & photo_right).float().mean())
        rows.append(
            f"| {name} | {method} | {100 * float(rejected.float().mean()):.1f}% | "
            + " | ".join(f"{100 * v:.0f}%" for v in per_kind)
            + f" | {float(auroc):.3f} | {100 * kept:.2f}% | {100 * photo_kept:.0f}%"
            + f" ({100 * photo_right_kept:.0f}% right) |"
        )
    temperature = fit_temperature(found["val"][2], sets["val"][1].long())
    test_logits = found["test"][2]
    before = calibration_error(test_logits.softmax(dim=1), test_labels.long())
    after = calibration_error((test_logits / temperature).softmax(dim=1), test_labels.long())
    accuracy = float((test_logits.argmax(dim=1) == test_labels).float().mean())
    ece = f"| {name} | {100 * accuracy:.2f}% | {temperature:.3f} | {100 * before:.2f}% | {100 * after:.2f}% |"
    return rows, ece


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.not_a_digit", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", nargs="+", required=True, help="Checkpoints trained with a validation split.")
    parser.add_argument("--names", nargs="+", help="A name for each checkpoint (default: the file paths).")
    parser.add_argument("--per_kind", type=int, default=200, help="Non-digits of each kind (default 200).")
    options = parser.parse_args(args)
    names = options.names or options.ckpt_path
    non_digits = non_digit_pictures(REPORT_SEED, options.per_kind)
    kinds = sorted(set(non_digits.kinds))
    lines = ["| network | score | non-digits answered \"not a digit\" | " + " | ".join(kinds)
             + " | AUROC | test digits classified right kept | digit photos kept |",
             "| --- " * (6 + len(kinds)) + "|"]  # fmt: skip
    eces = ["| network | test accuracy | temperature | ECE before | ECE after |", "| --- | ---: | ---: | ---: | ---: |"]
    for path, name in zip(options.ckpt_path, names, strict=True):
        rows, ece = measure(path, name, non_digits, default_data_dir())
        lines += rows
        eces.append(ece)
    refused = sum(non_digits.refused.values())
    text = (
        f"{len(non_digits.kinds):,} non-digits ({options.per_kind} of each kind; {refused} more refused by the"
        f" preparation itself: no ink), threshold at {100 * ACCEPT:.0f}% of the validation digits classified right."
        "\n\n" + "\n".join(lines) + "\n\nCalibration on the test set (temperature fitted on the validation split,"
        " 15 bins):\n\n" + "\n".join(eces)
    )
    print(text)
    command = " ".join(["python -m benchmarks.not_a_digit", *(sys.argv[1:] if args is None else args)])
    print(f"Wrote {write_stamped('not-a-digit', command, load_average(), text)}")


if __name__ == "__main__":
    main()
