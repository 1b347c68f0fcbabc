"""Pictures that are not digits, made here, and scores that tell them from digits: for "not a digit" answers.

`non_digit_pictures(seed)` draws them as a user would send them (dark on white, then prepared as `predict`
prepares any picture): letters and symbols in the DejaVu fonts, scribbles of random strokes, noise, blank and nearly
blank pictures and clutter of shapes (a blank picture never reaches a network: the preparation refuses it). Each
score is higher for pictures less like the digits the network learned:

- `softmax`: 1 - the top probability (the baseline: a sure network is trusted);
- `energy`: -logsumexp of the logits (Liu et al., 2020): the logits' overall size, which a softmax normalizes away;
- `distance`: the Mahalanobis distance of the network's penultimate features to the nearest digit's mean, with
  one covariance shared by the ten digits, fitted on training digits (Lee et al., 2018).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn

from mnist_dense.calibration import energy
from mnist_dense.pictures import PictureError, prepare_digit

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
# Characters no one would take for a digit (O, I, l, S, Z, B, G, b, g, q and the like are left out). The pictures
# a network may train on (`--data.non_digits`) and the ones it is measured on share no font and no character.
TRAINING_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSansCondensed.ttf")
TRAINING = (TRAINING_FONTS, "ACEFHKLMNPQRT#?@&acefhk")
MEASURED_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSans-Oblique.ttf",
                  "DejaVuSerifCondensed-Italic.ttf", "DejaVuSansMono-Bold.ttf")  # fmt: skip
MEASURED = (MEASURED_FONTS, "UVWXYmnprtuvwxy%$*+=<>")
SIDE = 128
METHODS = ("softmax", "energy", "distance")


@dataclass
class NonDigits:
    """Prepared 28x28 non-digits (N, 28, 28) uint8, each with its kind; and how many the preparation refused."""

    images: Tensor
    kinds: list[str]
    refused: dict[str, int]


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    picture = Image.new("L", (SIDE, SIDE), 255)
    return picture, ImageDraw.Draw(picture)


def _character(rng: random.Random, fonts: tuple[str, ...], characters: str) -> Image.Image:
    picture, pen = _canvas()
    font = ImageFont.truetype(str(FONT_DIR / rng.choice(fonts)), rng.randint(60, 100))
    pen.text((SIDE / 2, SIDE / 2), rng.choice(characters), fill=0, font=font, anchor="mm")
    return picture


def _scribble(rng: random.Random, *_: object) -> Image.Image:
    picture, pen = _canvas()
    for _ in range(rng.randint(6, 14)):
        points = [(rng.uniform(10, SIDE - 10), rng.uniform(10, SIDE - 10)) for _ in range(rng.randint(2, 4))]
        pen.line(points, fill=0, width=rng.randint(4, 10), joint="curve")
    return picture


def _noise(rng: random.Random, *_: object) -> Image.Image:
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    level = rng.uniform(0.2, 1.0)
    pixels = 255 - (torch.rand(SIDE, SIDE, generator=generator) * 255 * level).to(torch.uint8)
    return Image.fromarray(pixels.numpy())


def _blank(rng: random.Random, *_: object) -> Image.Image:
    return Image.new("L", (SIDE, SIDE), rng.randint(0, 255))  # one flat colour: the preparation refuses it


def _nearly_blank(rng: random.Random, *_: object) -> Image.Image:
    picture, pen = _canvas()
    for _ in range(rng.randint(1, 3)):
        x, y, r = rng.uniform(20, SIDE - 20), rng.uniform(20, SIDE - 20), rng.uniform(1.5, 4)
        pen.ellipse([x - r, y - r, x + r, y + r], fill=rng.randint(0, 120))
    return picture


def _clutter(rng: random.Random, *_: object) -> Image.Image:
    picture, pen = _canvas()
    for _ in range(rng.randint(3, 8)):
        x0, y0 = rng.uniform(0, SIDE - 20), rng.uniform(0, SIDE - 20)
        box = [x0, y0, x0 + rng.uniform(10, 60), y0 + rng.uniform(10, 60)]
        shade = rng.randint(0, 160)
        (pen.rectangle if rng.random() < 0.5 else pen.ellipse)(box, fill=shade if rng.random() < 0.5 else None,
                                                              outline=shade, width=rng.randint(2, 6))  # fmt: skip
    return picture


KINDS = {"character": _character, "scribble": _scribble, "noise": _noise, "nearly blank": _nearly_blank,
         "clutter": _clutter, "blank": _blank}  # fmt: skip


TRAINED_KINDS = tuple(kind for kind in KINDS if kind != "blank")  # a blank picture never reaches a network


def non_digit_pictures(
    seed: int, per_kind: int = 200, measured: bool = True, kinds: tuple[str, ...] = tuple(KINDS)
) -> NonDigits:
    """`per_kind` pictures of each kind, prepared as `predict --data.predict_images` prepares a file: the set to
    measure on (`measured`), or the one to train on, in other fonts and characters (use another seed too)."""
    rng = random.Random(seed)
    fonts, characters = MEASURED if measured else TRAINING
    images, drawn, refused = [], [], {}
    for kind in kinds:
        make = KINDS[kind]
        for _ in range(per_kind):
            picture = make(rng, fonts, characters)
            try:
                images.append(prepare_digit(torch.from_numpy(np.array(picture))))  # as decode_picture gives "L"
                drawn.append(kind)
            except PictureError:  # no ink left: predict and serve already refuse it in words
                refused[kind] = refused.get(kind, 0) + 1
    return NonDigits(torch.stack(images), drawn, refused)


def penultimate(net: nn.Module, inputs: Tensor) -> Tensor:
    """The features the last linear layer reads: the dense network's hidden units, the conv nets' pooled maps."""
    if hasattr(net, "layers"):  # DenseNet
        return net.layers[:-1](inputs)
    features = net.features_of(inputs)
    return features.amax(dim=(2, 3)) if net.head.in_features == features.shape[1] else features.flatten(1)


@dataclass
class FeatureDistance:
    """Class means (10, D) and the shared precision matrix (D, D) of training digits' penultimate features."""

    means: Tensor
    precision: Tensor

    @classmethod
    def fit(cls, features: Tensor, labels: Tensor) -> FeatureDistance:
        features = features.double()
        means = torch.stack([features[labels == k].mean(dim=0) for k in range(10)])
        centred = features - means[labels]
        covariance = centred.T @ centred / len(features)
        covariance += 1e-6 * covariance.diagonal().mean() * torch.eye(len(covariance), dtype=covariance.dtype)
        return cls(means.float(), torch.linalg.inv(covariance).float())

    def __call__(self, features: Tensor) -> Tensor:
        difference = features[:, None, :] - self.means[None]  # (N, 10, D)
        squared = torch.einsum("nkd,de,nke->nk", difference, self.precision, difference)
        return squared.min(dim=1).values.clamp_min(0).sqrt()


def scores(logits: Tensor, features: Tensor | None, distance: FeatureDistance | None, temperature: float = 1.0):
    """Each method's score (higher: less like a digit) for one batch."""
    found = {
        "softmax": 1 - (logits / temperature).softmax(dim=1).max(dim=1).values,
        "energy": energy(logits / temperature),
    }
    if distance is not None and features is not None:
        found["distance"] = distance(features)
    return found
