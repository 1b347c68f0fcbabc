"""`python -m mnist_dense.show`: the printed pixels are the file's bytes, the PNGs are real pictures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_dense.data import files as data
from mnist_dense.scaling import to_model_input
from mnist_dense.show import main
from tests.conftest import tiny_digits


def printed_block(out: str, header: str) -> torch.Tensor:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 1
    return torch.tensor([[float(v) for v in line.split()] for line in lines[start : start + 28]])


@pytest.mark.parametrize("normalization", ["unit", "standard"])
def test_printed_pixels_are_the_idx_bytes_and_the_model_inputs(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture, normalization: str
) -> None:
    images, labels = tiny_digits(600, seed=0)  # what the fixture wrote into train-images-idx3-ubyte
    main(["--index", "7", "--grid", "12", "--data_dir", str(tiny_mnist), "--out", str(tmp_path / "show"),
          "--normalization", normalization])  # fmt: skip
    out = capsys.readouterr().out
    assert f"Training image 7: label {int(labels[7])}" in out
    raw = printed_block(out, "Pixels as stored")
    assert torch.equal(raw, images[7].float())
    seen = printed_block(out, "Pixels as the model sees them")
    assert torch.allclose(seen, to_model_input(images[7], normalization)[0, 0], atol=0.005)
    with Image.open(tmp_path / "show" / "digit_7.png") as digit:
        assert digit.size == (300, 300)
    with Image.open(tmp_path / "show" / "grid.png") as grid:
        assert grid.size == (820, 180)  # 10 columns x 2 rows of cells at 0.8 inch, 100 dpi, plus margins


def test_an_index_outside_the_training_set_is_refused(tiny_mnist: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--index", "600", "--data_dir", str(tiny_mnist)])
    assert exit_info.value.code == 2
    assert "--index 600 is outside the training set; use 0 to 599" in capsys.readouterr().err


def test_on_paper_writes_test_digits_as_photos_named_with_their_label(tiny_mnist: Path, tmp_path: Path) -> None:
    from torchvision.io import decode_image

    main(["--data_dir", str(tiny_mnist), "--out", str(tmp_path / "show"), "--on_paper", "3"])
    _, labels = data.load_split(tiny_mnist, "test")
    files = sorted((tmp_path / "show" / "paper").glob("*.jpg"))
    assert [f.name for f in files] == [f"test{i:05d}_label{int(labels[i])}.jpg" for i in range(3)]
    page = decode_image(str(files[0]))
    assert page.shape == (1, 200, 240) and page[:, 0, 0].item() > 200  # light paper around the ink
