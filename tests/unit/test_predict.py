"""`predict`: one CSV row per image; your own pictures are made to look like MNIST digits first."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.io import write_png

from mnist_dense import MNISTClassifier
from mnist_dense.commands import main
from mnist_dense.data import load_split
from mnist_dense.pictures import DIGIT_BOX, OwnImagesError, load_own_images, prepare_digit
from mnist_dense.scaling import to_model_input
from tests.conftest import tiny_digits
from tests.tiny_runs import fit_tiny


def predict(ckpt: Path, root: Path, *extra: str) -> list[dict[str, str]]:
    main(["predict", "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(root), "--data.val_size", "100",
          "--trainer.enable_progress_bar", "false", *extra])  # fmt: skip
    (csv_path,) = root.glob("version_*/predictions.csv")
    with open(csv_path) as f:
        return list(csv.DictReader(f))


def bar_digit(label: int, *, dark_on_light: bool, size: int = 140) -> torch.Tensor:
    """A big drawing of the tiny data's digit `label` (a vertical bar), off centre, as a grayscale PNG would hold."""
    image = torch.zeros(1, size, size, dtype=torch.uint8)
    column = 5 * (2 + 2 * label)  # the tiny digits' bar, at 5x scale
    image[0, 20:120, column : column + 20] = 255
    return 255 - image if dark_on_light else image


def test_predict_writes_a_row_per_test_image(tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = fit_tiny(tiny_mnist, tmp_path / "fit", "--data.normalization", "standard") / "checkpoints" / "last.ckpt"
    rows = predict(ckpt, tmp_path / "predict", "--data.data_dir", str(tiny_mnist))  # normalization from the ckpt
    assert "predictions.csv" in capsys.readouterr().out
    _, labels = tiny_digits(200, seed=1)
    assert list(rows[0]) == ["image", "predicted", "probability", "label", "error", "score", "not_a_digit"]
    assert all(float(row["score"]) < 0 and row["not_a_digit"] == "" for row in rows)  # no threshold: not calibrated
    assert [row["image"] for row in rows] == [f"test[{i}]" for i in range(200)]
    assert [int(row["label"]) for row in rows] == labels.tolist()
    assert all(0.0 <= float(row["probability"]) <= 1.0 and not row["error"] for row in rows)
    right = sum(row["predicted"] == row["label"] for row in rows)
    assert right >= 180  # the bars are easy: the trained model gets nearly all


def test_the_probability_column_is_the_models_softmax_of_the_predicted_digit(tiny_mnist: Path, tmp_path: Path) -> None:
    ckpt = fit_tiny(tiny_mnist, tmp_path / "fit", "--data.normalization", "standard") / "checkpoints" / "last.ckpt"
    rows = predict(ckpt, tmp_path / "predict", "--data.data_dir", str(tiny_mnist))
    model = MNISTClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    images, _ = load_split(str(tiny_mnist), "test")
    with torch.no_grad():  # the tutorial's softmax over the 10 digits, on the inputs as the checkpoint trained
        probabilities = model(to_model_input(images, "standard")).softmax(dim=1)
    assert [int(row["predicted"]) for row in rows] == probabilities.argmax(dim=1).tolist()
    torch.testing.assert_close(
        torch.tensor([float(row["probability"]) for row in rows]), probabilities.max(dim=1).values, rtol=0, atol=5e-7
    )
    assert (probabilities.max(dim=1).values < 0.999).any()  # not all saturated: the column is a real probability


def test_own_images_are_prepared_as_mnist_was() -> None:
    digit = prepare_digit(bar_digit(3, dark_on_light=True))
    assert digit.dtype == torch.uint8 and digit.shape == (28, 28)
    assert digit[0].max() == 0 and digit[:, 0].max() == 0  # inverted: the paper became black
    assert digit.max() == 255  # the ink is white
    rows, cols = (digit > 50).any(dim=1).nonzero().flatten(), (digit > 50).any(dim=0).nonzero().flatten()
    assert int(rows[-1] - rows[0]) + 1 == DIGIT_BOX  # the tall side scaled to 20 pixels
    assert int(cols[-1] - cols[0]) + 1 == 4  # and the 100x20 bar keeps its aspect: 20x4
    mass = digit.float()
    centre_row = (mass.sum(dim=1) * torch.arange(28)).sum() / mass.sum()
    centre_col = (mass.sum(dim=0) * torch.arange(28)).sum() / mass.sum()
    assert abs(centre_row - 13.5) <= 0.5 and abs(centre_col - 13.5) <= 0.5  # centred by mass, not left where drawn
    assert torch.equal(digit, prepare_digit(bar_digit(3, dark_on_light=False)))  # light-on-dark: same digit


def test_own_images_predicted_and_unreadable_file_gets_an_error_row(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = fit_tiny(tiny_mnist, tmp_path / "fit") / "checkpoints" / "last.ckpt"
    folder = tmp_path / "mine"
    folder.mkdir()
    write_png(bar_digit(4, dark_on_light=True), str(folder / "a_four.png"))
    (folder / "b_broken.png").write_bytes(b"this is not a PNG")
    write_png(torch.full((1, 30, 30), 200, dtype=torch.uint8), str(folder / "c_blank.png"))
    specks = torch.full((1, 1024, 1024), 255, dtype=torch.uint8)
    specks[0, 3, 3] = specks[0, 1020, 1020] = 0  # ink that vanishes at 20x20
    write_png(specks, str(folder / "d_specks.png"))
    rows = predict(ckpt, tmp_path / "predict", "--data.data_dir", str(tiny_mnist), "--data.predict_images", str(folder))
    assert [Path(row["image"]).name for row in rows] == ["a_four.png", "b_broken.png", "c_blank.png", "d_specks.png"]
    four, broken, blank, specks_row = rows
    assert four["error"] == "" and four["label"] == "" and 0.0 <= float(four["probability"]) <= 1.0
    assert broken["predicted"] == "" and "not a readable image" in broken["error"]
    assert blank["predicted"] == "" and "no ink" in blank["error"]
    assert specks_row["predicted"] == "" and specks_row["error"].startswith("no ink is left when")
    assert "1 images predicted, 3 unreadable" in capsys.readouterr().out


def test_gif_webp_transparent_and_bad_pictures_in_one_folder_never_end_the_run(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """One GIF or WebP used to end the run with a traceback, a transparent PNG came out as 'no ink found'."""
    ckpt = fit_tiny(tiny_mnist, tmp_path / "fit", "--test_after_fit", "false") / "checkpoints" / "last.ckpt"
    folder = tmp_path / "mine"
    folder.mkdir()
    drawing = Image.fromarray(bar_digit(6, dark_on_light=True)[0].numpy())  # dark ink on white, 140x140
    ink_only = Image.new("RGBA", drawing.size, (0, 0, 0, 0))  # a canvas export: black ink, transparent paper
    ink_only.putalpha(Image.eval(drawing, lambda value: 255 - value))
    drawing.save(folder / "a.png")
    drawing.convert("RGB").save(folder / "b.gif")
    drawing.convert("RGB").save(folder / "c.webp", lossless=True)
    ink_only.save(folder / "d_transparent.png")
    Image.new("1", (20_000, 20_000)).save(folder / "e_bomb.png")  # 400 million pixels in 50 KB
    (folder / "f_notes.txt").write_text("not a picture")
    rows = predict(ckpt, tmp_path / "predict", "--data.data_dir", str(tiny_mnist), "--data.predict_images", str(folder))
    by_name = {Path(row["image"]).name: row for row in rows}
    png = by_name["a.png"]
    assert png["error"] == ""
    for name in ("b.gif", "c.webp", "d_transparent.png"):  # the same prepared digit, so the same answer
        assert (by_name[name]["predicted"], by_name[name]["probability"], by_name[name]["error"]) == (
            png["predicted"],
            png["probability"],
            "",
        ), name
    assert by_name["e_bomb.png"]["predicted"] == "" and "pixels, more than" in by_name["e_bomb.png"]["error"]
    assert by_name["f_notes.txt"]["predicted"] == "" and "not a readable image" in by_name["f_notes.txt"]["error"]
    assert "4 images predicted, 2 unreadable" in capsys.readouterr().out


def test_an_empty_folder_or_glob_is_a_clear_error(tiny_mnist: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(OwnImagesError, match="the folder .*empty matches no files"):
        load_own_images(str(tmp_path / "empty"))
    ckpt = fit_tiny(tiny_mnist, tmp_path / "fit", "--test_after_fit", "false") / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as exit_info:
        predict(ckpt, tmp_path / "predict", "--data.data_dir", str(tiny_mnist),
                "--data.predict_images", str(tmp_path / "nowhere" / "*.png"))  # fmt: skip
    assert exit_info.value.code == 1
    assert not list((tmp_path / "predict").glob("version_*/predictions.csv"))


def test_real_digits_drawn_large_dark_and_off_centre_come_back_as_mnist_digits() -> None:
    from mnist_dense.data import load_split
    from mnist_dense.show import draw_on_paper
    from tests.conftest import BUNDLED_DATA

    images, _ = load_split(BUNDLED_DATA, "test")
    similarity = []
    for i, digit in enumerate(images[:50]):
        page = draw_on_paper(digit, i)
        assert page.shape == (1, 200, 240) and page.float().mean() > 128  # dark on light, larger than MNIST
        prepared, original = prepare_digit(page).float().flatten(), digit.float().flatten()
        similarity.append(float(prepared @ original / prepared.norm() / original.norm()))
    # cosine similarity to the MNIST original (only inverted and squashed to 28x28: 0.35)
    assert sum(similarity) / len(similarity) > 0.75


def test_the_rows_of_predictions_csv_follow_the_input_order_with_unusable_files_in_their_place() -> None:
    from mnist_dense.callbacks.predictions import PredictionCSVWriter
    from mnist_dense.pictures import OwnImages

    probabilities = torch.tensor([[0.1, 0.9] + [0.0] * 8, [0.7, 0.3] + [0.0] * 8, [0.0] * 9 + [1.0]])
    outputs = [{"probabilities": probabilities[:2], "target": torch.tensor([1, -1])},
               {"probabilities": probabilities[2:], "target": torch.tensor([9])}]  # fmt: skip
    rows = PredictionCSVWriter.rows(outputs)
    plain = {"score": "", "not_a_digit": ""}  # outputs without a score
    assert rows == [
        {"image": "test[0]", "predicted": 1, "probability": "0.900000", "label": 1, "error": "", **plain},
        {"image": "test[1]", "predicted": 0, "probability": "0.700000", "label": "", "error": "", **plain},  # no label
        {"image": "test[2]", "predicted": 9, "probability": "1.000000", "label": 9, "error": "", **plain},
    ]
    scores = ([-9.0, -2.5], [-2.0])
    scored = [{**each, "score": torch.tensor(score)} for each, score in zip(outputs, scores, strict=True)]
    rows = PredictionCSVWriter.rows(scored, threshold=-2.5)
    assert [(r["score"], r["not_a_digit"]) for r in rows] == [("-9.000", "no"), ("-2.500", "no"), ("-2.000", "yes")]
    own = OwnImages(torch.zeros(2, 28, 28, dtype=torch.uint8), ["a.png", "c.png"], {"b.png": "not a picture"},
                    ["a.png", "b.png", "c.png"])  # fmt: skip
    mine = [{"probabilities": probabilities[:2], "target": torch.tensor([-1, -1])}]
    assert [(r["image"], r["predicted"], r["error"]) for r in PredictionCSVWriter.rows(mine, own)] == [
        ("a.png", 1, ""), ("b.png", "", "not a picture"), ("c.png", 0, "")]  # fmt: skip
    only_failures = OwnImages(torch.zeros(0, 28, 28, dtype=torch.uint8), [], {"b.png": "x"}, ["b.png"])
    assert PredictionCSVWriter.rows([], only_failures) == [
        {"image": "b.png", "predicted": "", "probability": "", "label": "", "error": "x", **plain}]  # fmt: skip
    assert PredictionCSVWriter.rows([]) == []
