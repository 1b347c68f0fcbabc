"""`python -m mnist_dense.show`: the printed pixels are the file's bytes; the pictures show the digits and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.utils import make_grid

from mnist_dense import show
from mnist_dense.callbacks import plots
from mnist_dense.data import load_split
from mnist_dense.scaling import to_model_input
from tests.conftest import tiny_digits
from tests.unit.test_plots import record_figures


def printed_block(out: str, header: str) -> torch.Tensor:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 1
    return torch.tensor([[float(v) for v in line.split()] for line in lines[start : start + 28]])


@pytest.mark.parametrize("normalization", ["unit", "standard"])
def test_printed_pixels_are_the_idx_bytes_and_the_model_inputs(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture, normalization: str
) -> None:
    images, labels = tiny_digits(600, seed=0)  # what the fixture wrote into train-images-idx3-ubyte
    show.main(["--index", "7", "--data.data_dir", str(tiny_mnist), "--out", str(tmp_path / "show"),
               "--data.normalization", normalization])  # fmt: skip
    out = capsys.readouterr().out
    assert f"Training image 7: label {int(labels[7])}" in out
    raw = printed_block(out, "Pixels as stored")
    assert torch.equal(raw, images[7].float())
    seen = printed_block(out, "Pixels as the model sees them")
    assert torch.allclose(seen, to_model_input(images[7], normalization)[0, 0], atol=0.005)


def test_the_pictures_show_training_image_n_and_the_first_k_digits_with_their_labels(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = record_figures(monkeypatch, show)
    images, labels = tiny_digits(600, seed=0)
    show.main(["--index", "7", "--grid", "12", "--data.data_dir", str(tiny_mnist), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    for name in ("digit_7.png", "grid.png"):
        assert f"Saved {tmp_path / name}" in out and (tmp_path / name).stat().st_size > 0
    assert sorted(figures) == ["digit_7.png", "grid.png"]

    digit_ax = figures["digit_7.png"].axes[0]  # the other axes is the colour bar
    assert np.array_equal(digit_ax.images[0].get_array(), images[7].numpy())
    assert digit_ax.images[0].get_clim() == (0, 255)  # pixels as stored, not rescaled to their own range
    assert digit_ax.get_title().endswith(f"label {int(labels[7])}")

    (grid_ax,) = figures["grid.png"].axes
    expected = make_grid(images[:12, None].float() / 255, nrow=10, padding=2, pad_value=plots.GRID_PAD_VALUE)
    np.testing.assert_allclose(grid_ax.images[0].get_array(), expected.permute(1, 2, 0).numpy())
    assert [t.get_text() for t in grid_ax.texts] == [str(y) for y in labels[:12].tolist()]
    cells = [(int(y // 30), int(x // 30)) for x, y in (t.get_position() for t in grid_ax.texts)]
    assert cells == [divmod(i, 10) for i in range(12)]  # each label in its digit's cell


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--index", "600"], "--index 600 is outside the training set; use 0 to 599"),
        (["--grid", "0"], "--grid 0: show at least 1 digit"),
        (["--on_paper", "-1"], "--on_paper -1"),
        (["--data.normalization", "z"], "argument --data.normalization: invalid choice: 'z'"),
        (["--data_dir", "x"], "unrecognized arguments: --data_dir"),  # one spelling: the main CLI's
        (["--data.data", "x"], "unrecognized arguments: --data.data"),  # no abbreviations either
    ],
)
def test_bad_values_exit_2_with_one_line_naming_the_option(
    tiny_mnist: Path, capsys: pytest.CaptureFixture, options: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        show.main([*options, "--data.data_dir", str(tiny_mnist)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_on_paper_writes_test_digits_as_photos_named_with_their_label(tiny_mnist: Path, tmp_path: Path) -> None:
    from torchvision.io import decode_image

    show.main(["--data.data_dir", str(tiny_mnist), "--out", str(tmp_path / "show"), "--on_paper", "3"])
    _, labels = load_split(tiny_mnist, "test")
    files = sorted((tmp_path / "show" / "paper").glob("*.jpg"))
    assert [f.name for f in files] == [f"test{i:05d}_label{int(labels[i])}.jpg" for i in range(3)]
    page = decode_image(str(files[0]))
    assert page.shape == (1, 200, 240) and page[:, 0, 0].item() > 200  # light paper around the ink
