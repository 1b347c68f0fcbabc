"""The non-digits "not a digit" is trained and measured on, the scores, and the opt-in outlier-exposure training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mnist_dense import non_digits
from mnist_dense.constants import NOT_A_DIGIT
from mnist_dense.data import MNISTDataModule
from mnist_dense.module import MNISTClassifier
from tests.conftest import cpu_trainer


def test_the_measured_and_the_training_non_digits_share_no_font_and_no_character() -> None:
    (train_fonts, train_characters), (measured_fonts, measured_characters) = non_digits.TRAINING, non_digits.MEASURED
    assert not set(train_fonts) & set(measured_fonts) and not set(train_characters) & set(measured_characters)
    assert all((non_digits.FONT_DIR / font).is_file() for font in (*train_fonts, *measured_fonts))
    assert not set("0123456789OolISZB") & set(train_characters + measured_characters)


def test_each_kind_is_drawn_prepared_as_predict_prepares_a_picture_and_a_seed_draws_the_same() -> None:
    drawn = non_digits.non_digit_pictures(seed=3, per_kind=4)
    assert drawn.images.shape[1:] == (28, 28) and drawn.images.dtype == torch.uint8
    assert drawn.refused == {"blank": 4}  # one flat colour: the preparation says "no ink"
    assert sorted(set(drawn.kinds)) == sorted(set(non_digits.KINDS) - {"blank"}) and len(drawn.kinds) == 20
    assert all(image.any() for image in drawn.images)  # ink on black, as a prepared digit
    assert torch.equal(drawn.images, non_digits.non_digit_pictures(seed=3, per_kind=4).images)
    assert not torch.equal(drawn.images, non_digits.non_digit_pictures(seed=4, per_kind=4).images)


def test_the_feature_distance_is_small_near_a_digits_mean_and_large_far_from_all() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat(200)
    centres = 10 * torch.randn(10, 5, generator=generator)
    features = centres[labels] + torch.randn(2000, 5, generator=generator)
    distance = non_digits.FeatureDistance.fit(features, labels)
    near, far = distance(centres[:3] + 0.1), distance(torch.full((3, 5), 100.0))
    assert (near < 1).all() and (far > 20).all()


def test_non_digits_join_the_training_split_only_labelled_10(tiny_mnist: Path) -> None:
    plain = MNISTDataModule(data_dir=str(tiny_mnist), val_size=100)
    mixed = MNISTDataModule(data_dir=str(tiny_mnist), val_size=100, non_digits=30)
    for data in (plain, mixed):
        data.setup("fit")
    train, val = mixed.splits["train"], mixed.splits["val"]
    assert len(train) == len(plain.splits["train"]) + 30 and int((train.labels == NOT_A_DIGIT).sum()) == 30
    assert torch.equal(val.labels, plain.splits["val"].labels)  # validation holds digits only


def test_outlier_exposure_adds_the_cross_entropy_to_every_digit_alike_and_counts_digits_only(tmp_path: Path) -> None:
    model = MNISTClassifier(non_digit_weight=0.5)
    images = torch.rand(6, 1, 28, 28)
    labels = torch.tensor([3, NOT_A_DIGIT, 1, NOT_A_DIGIT, 7, 0])
    loss = model.training_step((images, labels), 0)
    with torch.no_grad():
        logits = model(images)
    digit = labels != NOT_A_DIGIT
    uniform = torch.full((2, 10), 0.1)
    expected = F.cross_entropy(logits[digit], labels[digit]) + 0.5 * F.cross_entropy(logits[~digit], uniform)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert int(model.train_loss.weight) == 4  # the epoch's loss and accuracy count the four digits
    plain = MNISTClassifier()
    with pytest.raises(IndexError):  # without the recipe, a label 10 is no digit's: the tutorial's loss refuses it
        plain.training_step((images, labels), 0)
    assert MNISTClassifier().hparams.non_digit_weight == 0.0
    cpu_trainer(tmp_path)  # the module stays a plain LightningModule: a Trainer takes it
