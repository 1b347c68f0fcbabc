"""The one preparation of pictures people send (predict, serve, the page): every format, transparency, bad files.

Real MNIST test digits are saved the way people's files hold them (PNG, JPEG, GIF, WebP, BMP, with or
without transparency, 16-bit, rotated by EXIF) and must come back as the digit that the PNG gives.
"""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from benchmarks.hostile import as_mpo, many_scan_jpeg
from mnist_dense import pictures
from mnist_dense.data import load_split
from mnist_dense.pictures import (
    MAX_JPEG_SCANS,
    MAX_PIXELS,
    OwnImagesError,
    PictureError,
    PictureMemoryError,
    count_jpeg_scans,
    decode_picture,
    find_files,
    ink_on_black,
    load_own_images,
    prepare_as_drawn,
    prepare_digit,
    prepare_picture,
)
from tests.conftest import BUNDLED_DATA

DIGITS = 12


@pytest.fixture(scope="module")
def test_digits() -> torch.Tensor:
    """The first test digits, 4x larger (as a drawing would be), uint8 (N, 112, 112), white on black."""
    images, _ = load_split(BUNDLED_DATA, "test")
    return images[:DIGITS].repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)


def saved(picture: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **options)
    return buffer.getvalue()


def similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().flatten(), b.float().flatten()
    return float(a @ b / a.norm() / b.norm())


def as_ink_on_transparent(digit: torch.Tensor, colour: tuple[int, int, int]) -> Image.Image:
    """What a canvas exports: every pixel the ink colour, the digit only in the alpha channel."""
    picture = Image.new("RGBA", (digit.shape[1], digit.shape[0]), (*colour, 0))
    picture.putalpha(Image.fromarray(digit.numpy()))
    return picture


@pytest.mark.parametrize(
    ("fmt", "options", "least_similar"),
    [("PNG", {}, 1.0), ("GIF", {}, 1.0), ("WEBP", {"lossless": True}, 1.0), ("BMP", {}, 1.0), ("JPEG", {}, 0.99)],
)
def test_every_format_gives_the_digit_the_png_gives(test_digits, fmt: str, options: dict, least_similar: float) -> None:
    for digit in test_digits:
        expected = prepare_digit(digit)
        for picture in (Image.fromarray(digit.numpy()), Image.fromarray(digit.numpy()).convert("RGB")):
            got = prepare_picture(saved(picture, fmt, **options))
            assert got.shape == (28, 28) and got.dtype == torch.uint8
            assert similarity(got, expected) >= least_similar - 1e-6, fmt


@pytest.mark.parametrize(("fmt", "least_similar"), [("PNG", 0.999), ("WEBP", 0.999), ("GIF", 0.85)])
def test_a_dark_digit_on_a_transparent_background_is_read_as_drawn(test_digits, fmt: str, least_similar: float) -> None:
    """Canvas exports and drawing apps: black ink, transparent paper (was: 'no ink found')."""
    for digit in test_digits:
        # GIF keeps one transparent palette entry: the outline comes out hard and thinner (unrelated digits: < 0.7).
        data = saved(as_ink_on_transparent(digit, (0, 0, 0)), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        gray = decode_picture(data)
        assert gray.shape == (1, *digit.shape)
        assert similarity(prepare_picture(data), prepare_digit(digit)) > least_similar


def test_a_light_digit_on_a_transparent_background_is_read_too(test_digits) -> None:
    for digit in test_digits:
        data = saved(as_ink_on_transparent(digit, (255, 255, 255)), "PNG")
        assert similarity(prepare_picture(data), prepare_digit(digit)) > 0.99


def test_sixteen_bit_grayscale_is_scaled_not_clipped(test_digits) -> None:
    for digit in test_digits:
        sixteen = Image.fromarray(digit.numpy().astype("uint16") * 257)
        assert torch.equal(prepare_picture(saved(sixteen, "PNG")), prepare_digit(digit))


def test_a_phone_photo_rotated_by_exif_is_turned_upright(test_digits) -> None:
    upright = Image.fromarray(test_digits[0].numpy())
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the file holds the picture turned on its side
    data = saved(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=95)
    assert similarity(prepare_picture(data), prepare_digit(test_digits[0])) > 0.99


def test_a_12_megapixel_photo_is_scaled_down_first_and_gives_the_same_digit(test_digits) -> None:
    """Big photos are reduced to 1024 pixels a side before preparing: cheaper, and the digit ends up 20x20 anyway."""
    for digit in test_digits[:4]:
        ink = Image.fromarray(255 - digit.numpy()).resize((1600, 1600), Image.Resampling.BILINEAR)
        photo = Image.new("L", (4000, 3000), 255)
        photo.paste(ink, (1800, 600))
        small = photo.resize((400, 300), Image.Resampling.BILINEAR)
        big, reference = prepare_picture(saved(photo, "JPEG", quality=90)), prepare_picture(saved(small, "PNG"))
        assert similarity(big, reference) > 0.97
        assert similarity(big, prepare_digit(digit)) > 0.9


def test_a_picture_over_the_pixel_limit_is_refused_before_decoding() -> None:
    side = int(MAX_PIXELS**0.5) + 100
    bomb = saved(Image.new("1", (side, side)), "PNG")  # a few KB that would decode to tens of MB
    assert len(bomb) < 100_000
    with pytest.raises(PictureError, match=f"{side}x{side} = .* pixels, more than the 25,000,000"):
        decode_picture(bomb)


def test_a_decompression_bomb_beyond_pillows_own_limit_gets_the_same_message() -> None:
    bomb = saved(Image.new("1", (20_000, 20_000)), "PNG")  # 400 million pixels in about 50 KB
    with pytest.raises(PictureError) as refused:
        decode_picture(bomb)
    assert str(refused.value) == (
        f"the picture is over {2 * Image.MAX_IMAGE_PIXELS:,} pixels, more than the 25,000,000 read here (a guard"
        " against decompression bombs): scale it down, a digit needs no more than a few hundred pixels a side"
    )


class Admitted(Exception):
    """Raised by `admit`: the header passed every guard, and no pixel was decoded."""


def test_a_picture_of_exactly_the_pixel_limit_passes_the_guard() -> None:
    def admit(width: int, height: int) -> None:
        raise Admitted(width * height)

    with pytest.raises(Admitted, match=f"^{MAX_PIXELS}$"):
        decode_picture(saved(Image.new("1", (5000, MAX_PIXELS // 5000)), "PNG"), admit=admit)


def test_only_the_five_formats_are_decoded_and_the_refusals_are_whole_sentences() -> None:
    tiff = saved(Image.new("L", (28, 28), 255), "TIFF")  # Pillow reads TIFF; this package does not
    for data in (tiff, b"digit: seven"):
        with pytest.raises(PictureError) as refused:
            decode_picture(data)
        assert str(refused.value) == "not a readable image (use PNG, JPEG, GIF, WebP or BMP)"
    with pytest.raises(PictureError) as refused:
        decode_picture(many_scan_jpeg(side=300, scans=MAX_JPEG_SCANS + 1))
    assert str(refused.value) == (
        f"the JPEG holds more than {MAX_JPEG_SCANS} scans (progressive passes over the whole picture; an encoder"
        " writes about 10), a guard against pictures made to be slow to decode: save it as an ordinary JPEG or PNG"
    )


def test_a_large_colour_jpeg_is_decoded_in_grey_at_a_reduced_scale_as_pillows_draft_does(test_digits) -> None:
    photo = Image.fromarray(255 - test_digits[0].numpy()).resize((3000, 3000)).convert("RGB")
    data = saved(photo, "JPEG", quality=90)
    reference = Image.open(io.BytesIO(data))
    reference.draft("L", (1024, 1024))
    assert reference.mode == "L" and reference.size == (1500, 1500)  # decoded in grey at half the size
    reference.thumbnail((1024, 1024))
    assert torch.equal(decode_picture(data), torch.from_numpy(np.asarray(reference))[None])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a readable image"),
        (b"digit: seven\n", "not a readable image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "not a readable image"),  # a format whose decoder would run a program
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a readable image"),  # a PNG signature, no PNG
    ],
)
def test_what_is_not_a_picture_is_a_picture_error(data: bytes, message: str) -> None:
    with pytest.raises(PictureError, match=message):
        prepare_picture(data)


def test_a_truncated_file_and_a_blank_picture_are_picture_errors(test_digits) -> None:
    whole = saved(Image.fromarray(test_digits[0].numpy()), "PNG")
    with pytest.raises(PictureError, match="damaged image"):
        prepare_picture(whole[: len(whole) // 2])
    with pytest.raises(PictureError, match="no ink found"):
        prepare_picture(saved(Image.new("RGBA", (50, 50), (0, 0, 0, 0)), "PNG"))
    with pytest.raises(PictureError, match="no ink found"):
        prepare_picture(saved(Image.new("L", (50, 50), 200), "JPEG"))


def test_a_jpeg_with_more_scans_than_the_limit_is_refused_from_its_markers_before_decoding() -> None:
    """A progressive JPEG is decoded scan by scan; one made of thousands of scans is refused before any pixel."""
    looked_at = []
    with pytest.raises(PictureError, match=f"more than {MAX_JPEG_SCANS} scans"):
        decode_picture(many_scan_jpeg(side=1000, scans=5000), admit=lambda *size: looked_at.append(size))
    assert looked_at == []  # refused before the decoder was even asked for


def test_a_jpeg_wrapped_as_mpo_is_held_to_the_same_scan_limit(test_digits) -> None:
    """Pillow opens a JPEG with an MPF segment as MPO; its scans are decoded all the same, so they are counted."""
    looked_at = []
    bomb = as_mpo(many_scan_jpeg(side=300, scans=MAX_JPEG_SCANS + 1))
    assert Image.open(io.BytesIO(bomb)).format == "MPO"
    with pytest.raises(PictureError, match=f"more than {MAX_JPEG_SCANS} scans"):
        decode_picture(bomb, admit=lambda *size: looked_at.append(size))
    assert looked_at == []
    decode_picture(as_mpo(many_scan_jpeg(side=300, scans=MAX_JPEG_SCANS)))  # at the limit: decoded
    digit = saved(Image.fromarray(255 - test_digits[0].numpy()).convert("RGB"), "JPEG", progressive=True)
    assert torch.equal(prepare_picture(as_mpo(digit)), prepare_picture(digit))


@pytest.mark.parametrize(
    ("paper", "ink", "dots"),
    [(255, 0, [(3, 3), (1020, 1020)]), (0, 60, [(100, 100), (100, 900), (900, 100), (900, 900)])],
    ids=["two-black-pixels-on-white", "four-faint-dots-on-black"],
)
@pytest.mark.parametrize("as_drawn", [False, True], ids=["prepared", "as-drawn"])
def test_ink_that_vanishes_when_scaled_is_a_picture_error(paper: int, ink: int, dots: list, as_drawn: bool) -> None:
    picture = Image.new("L", (1024, 1024), paper)
    for dot in dots:
        picture.putpixel(dot, ink)
    with pytest.raises(PictureError) as refused:
        prepare_picture(saved(picture, "PNG"), as_drawn=as_drawn)
    spans = max(x for x, _ in dots) - min(x for x, _ in dots) + 1
    scaling = "the 1024x1024 picture is scaled to 28x28" if as_drawn else f"the {spans}x{spans} pixels the ink spans"
    assert str(refused.value).startswith(f"no ink is left when {scaling}")
    assert str(refused.value).endswith("draw them thicker, or crop the picture closer to the digit")


def test_the_scan_limit_is_exact_and_ordinary_jpegs_are_far_below_it(test_digits) -> None:
    digit = Image.fromarray(255 - test_digits[0].numpy())
    assert count_jpeg_scans(saved(digit, "JPEG"), stop_after=1000) == 1  # baseline: one scan
    assert count_jpeg_scans(saved(digit.convert("RGB"), "JPEG", progressive=True), stop_after=1000) == 10  # libjpeg's
    decode_picture(many_scan_jpeg(side=300, scans=MAX_JPEG_SCANS))
    with pytest.raises(PictureError, match="scans"):
        decode_picture(many_scan_jpeg(side=300, scans=MAX_JPEG_SCANS + 1))


def test_start_of_scan_bytes_inside_a_segment_are_not_counted(test_digits) -> None:
    """Markers are walked by their lengths: bytes like SOS inside a comment (or an EXIF thumbnail) are data."""
    digit = Image.fromarray(255 - test_digits[0].numpy())
    data = saved(digit, "JPEG", comment=b"\xff\xda\x00\x08" * 2000)
    assert data.count(b"\xff\xda") > MAX_JPEG_SCANS
    assert count_jpeg_scans(data, stop_after=1000) == 1
    assert similarity(prepare_picture(data), prepare_digit(test_digits[0])) > 0.99


def test_admit_gets_the_size_from_the_header_and_what_it_raises_passes_through(test_digits) -> None:
    class TooLarge(Exception):
        pass

    def refuse(width: int, height: int) -> None:
        raise TooLarge(f"{width}x{height}")

    with pytest.raises(TooLarge, match="112x56"):
        decode_picture(saved(Image.fromarray(test_digits[0].numpy()).resize((112, 56)), "PNG"), admit=refuse)


def exif_with(orientation: int, other_tag_type: int) -> bytes:
    """Raw EXIF: the orientation, and ImageDescription stored with the given TIFF type (2 is its own, ASCII)."""
    entries = [(0x0112, 3, struct.pack("<H", orientation)), (0x010E, other_tag_type, b"\x01\x00\x00\x00")]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHI", tag, kind, 1) + value.ljust(4, b"\0")
                                                     for tag, kind, value in entries)  # fmt: skip
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


def test_exif_with_an_unusual_tag_type_still_turns_the_photo_upright(test_digits) -> None:
    """ImageDescription as a RATIONAL: Pillow's exif_transpose rotates, then fails to write the EXIF back (it used
    to be refused as 'a damaged image (AttributeError: ...)')."""
    upright = Image.fromarray(test_digits[0].numpy())
    data = saved(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif_with(6, 5), quality=95)
    with pytest.raises(AttributeError):  # the library's failure this guards against
        ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert similarity(prepare_picture(data), prepare_digit(test_digits[0])) > 0.99


def test_exif_that_cannot_be_read_leaves_the_picture_as_stored(test_digits) -> None:
    stored = Image.fromarray(test_digits[1].numpy())
    data = saved(stored, "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f", quality=95)  # IFD far past the end
    with pytest.warns(UserWarning, match="Corrupt EXIF"):  # Pillow cannot read it
        assert similarity(prepare_picture(data), prepare_digit(test_digits[1])) > 0.99


def test_a_damaged_picture_is_described_in_words_not_by_an_exception_type(test_digits) -> None:
    png, jpeg = (saved(Image.fromarray(test_digits[0].numpy()), fmt) for fmt in ("PNG", "JPEG"))
    for damaged in (png[: len(png) // 2], jpeg[: len(jpeg) // 2]):  # cut short
        with pytest.raises(PictureError) as refused:
            prepare_picture(damaged)
        assert str(refused.value).startswith("a damaged image: ")
        assert not re.search(r"\b\w+(Error|Exception)\b", str(refused.value)), str(refused.value)  # OSError...


def test_as_drawn_scales_the_whole_picture_and_leaves_the_ink_where_it_was(test_digits) -> None:
    """The page's switch: no cropping, no scaling of the digit to 20x20, no centring; prepare_digit does all three."""
    for digit in test_digits[:4]:  # 112x112 (MNIST's digits 4x larger) come back as the 28x28 digit
        assert similarity(prepare_as_drawn(digit), digit[::4, ::4]) > 0.95
    corner = torch.zeros(280, 280, dtype=torch.uint8)
    corner[10:66, 10:66] = test_digits[0][::2, ::2]  # a small digit in the top-left corner of a drawing pad
    ink = prepare_as_drawn(corner).nonzero().float()
    assert ink.max() < 8  # still in the corner, a fifth of the size
    assert 11 < prepare_digit(corner).nonzero().float().mean() < 17  # moved to the middle, 20 pixels high
    wide = torch.zeros(140, 280, dtype=torch.uint8)
    wide[50:90, 120:160] = 255  # a square of ink on a wide picture stays square: padded, not stretched
    rows, cols = prepare_as_drawn(wide).nonzero().unbind(1)
    assert rows.max() - rows.min() == cols.max() - cols.min()


# --- the preparation pixel by pixel, against what MNIST's recipe gives by hand ---------------------------------------


def test_a_rectangle_of_ink_becomes_a_20_pixel_block_in_the_middle() -> None:
    """Crop to the ink, scale its longer side to 20 (a uniform patch stays uniform), centre it in 28x28."""
    for paper, ink in ((0, 255), (255, 0), (30, 130)):  # white on black, black on white, grey on dark grey
        picture = torch.full((100, 60), paper, dtype=torch.uint8)
        picture[37:47, 21:26] = ink  # 10 rows, 5 columns of ink
        expected = torch.zeros(28, 28, dtype=torch.uint8)
        expected[4:24, 9:19] = 255  # 20 rows, 10 columns: the tallest side scaled to MNIST's 20x20 box
        assert torch.equal(prepare_digit(picture), expected), (paper, ink)


def test_a_one_pixel_line_stays_one_pixel_wide() -> None:
    picture = torch.zeros(200, 200, dtype=torch.uint8)
    picture[50:90, 120] = 255  # 40 pixels tall: scaled by a half, its width would round to 0
    expected = torch.zeros(28, 28, dtype=torch.uint8)
    expected[4:24, 13] = 255
    assert torch.equal(prepare_digit(picture), expected)
    assert torch.equal(prepare_digit(picture.T.contiguous()), expected.T)  # and lying down


def test_ink_is_what_is_brighter_than_a_fifth_of_full_ink() -> None:
    """A pixel exactly at the ink level (20 of 100 above the paper) is paper: the crop leaves it out."""
    picture = torch.zeros(100, 100, dtype=torch.uint8)
    picture[40:60, 45:55] = 100
    picture[5, 5] = 20  # far from the digit, exactly INK_LEVEL after stretching the contrast
    assert torch.equal(prepare_digit(picture), prepare_digit(picture.where(picture != 20, 0)))
    picture[5, 5] = 21  # just above: part of the digit, so the crop grows to reach it
    assert not torch.equal(prepare_digit(picture), prepare_digit(picture.where(picture != 21, 0)))


def reference_ink_on_black(picture: np.ndarray) -> np.ndarray:
    """The documented rule in numpy: the paper is the median of the four edges (torch's median: the lower middle)."""
    x = picture.astype(np.float32)

    def paper(x: np.ndarray) -> float:
        edges = np.sort(np.concatenate([x[0, :], x[-1, :], x[:, 0], x[:, -1]]))
        return edges[(len(edges) - 1) // 2]

    if paper(x) > 127:
        x = 255 - x  # and the paper is the median of the inverted edges
    x = np.clip(x - paper(x), 0, None)
    return x / x.max()


@pytest.mark.parametrize("seed", range(6))
def test_the_paper_level_is_the_median_of_the_four_edges_and_light_paper_is_inverted(seed: int) -> None:
    generator = np.random.default_rng(seed)
    height, width = generator.integers(5, 40, size=2)
    low, high = sorted(generator.integers(0, 256, size=2))
    picture = generator.integers(low, high + 1, size=(height, width)).astype(np.uint8)
    picture[height // 2, width // 2] = 0 if seed % 2 else 255  # ink of either kind, so it is never flat
    expected = reference_ink_on_black(picture)
    np.testing.assert_allclose(ink_on_black(torch.from_numpy(picture)).numpy(), expected, rtol=0, atol=1e-6)


def test_a_paper_exactly_half_grey_is_dark_paper() -> None:
    """127 is below the middle: paper of 127 with brighter ink is not inverted, 128 with darker ink is."""
    dark = torch.full((9, 9), 127, dtype=torch.uint8)
    dark[4, 4] = 255
    assert ink_on_black(dark)[4, 4] == 1 and ink_on_black(dark).sum() == 1
    light = torch.full((9, 9), 128, dtype=torch.uint8)
    light[4, 4] = 0
    assert ink_on_black(light)[4, 4] == 1 and ink_on_black(light).sum() == 1


def test_a_picture_with_one_grey_level_of_ink_is_still_a_digit() -> None:
    faint = torch.zeros(9, 9, dtype=torch.uint8)
    faint[4, 4] = 1  # the least ink there is: stretched to full ink
    assert ink_on_black(faint)[4, 4] == 1
    with pytest.raises(PictureError, match="^no ink found: the picture is one flat colour$"):
        ink_on_black(torch.full((9, 9), 77, dtype=torch.uint8))


def test_as_drawn_pads_a_picture_that_is_not_square_evenly_then_scales_it() -> None:
    for height, width in ((20, 40), (40, 20), (30, 40)):
        full = torch.zeros(height, width, dtype=torch.uint8)
        full[1:-1, 1:-1] = 255  # ink up to a frame of paper: the padding shows as more paper
        drawn = prepare_as_drawn(full)
        assert drawn.dtype == torch.uint8 and drawn.shape == (28, 28) and drawn.max() == 255
        assert torch.equal(drawn, drawn.flip(0)) and torch.equal(drawn, drawn.flip(1))  # padded alike on both sides
        inked = (drawn > 0).sum(dim=0 if height < width else 1)
        assert inked.max() < 28 and (drawn == 255).any(dim=1).sum() >= 12  # paper above and below, ink across
    square = torch.zeros(56, 56, dtype=torch.uint8)
    square[1:-1, 1:-1] = 255
    assert torch.equal(prepare_as_drawn(square)[1:-1, 1:-1], torch.full((26, 26), 255, dtype=torch.uint8))


def test_as_drawn_averages_fine_detail_instead_of_sampling_it() -> None:
    """Scaled with antialiasing: a 1-pixel checkerboard shrunk 3 times is an even grey, not a pattern of 0 and 255."""
    checkerboard = ((torch.arange(84)[:, None] + torch.arange(84)) % 2 * 255).to(torch.uint8)
    drawn = prepare_as_drawn(checkerboard).float()
    assert drawn[2:-2, 2:-2].max() - drawn[2:-2, 2:-2].min() < 40 and 100 < drawn.mean() < 160


def test_prepare_picture_passes_admit_on_and_as_drawn_chooses_the_preparation(test_digits) -> None:
    corner = torch.zeros(140, 140, dtype=torch.uint8)
    corner[5:61, 5:61] = test_digits[0][::2, ::2]
    data = saved(Image.fromarray(corner.numpy()), "PNG")
    assert torch.equal(prepare_picture(data, as_drawn=True), prepare_as_drawn(corner))
    assert torch.equal(prepare_picture(data), prepare_digit(corner))
    sizes = []
    prepare_picture(data, admit=lambda *size: sizes.append(size))
    assert sizes == [(140, 140)]


def test_a_dark_digit_on_a_transparent_background_in_grey_with_alpha(test_digits) -> None:
    """Transparent paper is white paper in grey-with-alpha pictures too (mode LA)."""
    digit = test_digits[0]
    picture = as_ink_on_transparent(digit, (0, 0, 0)).convert("LA")
    assert Image.open(io.BytesIO(saved(picture, "PNG"))).mode == "LA"
    assert similarity(prepare_picture(saved(picture, "PNG")), prepare_digit(digit)) > 0.99


def test_decoding_failures_are_sentences(test_digits, monkeypatch: pytest.MonkeyPatch) -> None:
    data = saved(Image.fromarray(test_digits[0][:40, :50].numpy()), "PNG")

    def fails_with(error: BaseException):
        def grayscale(picture):
            raise error

        monkeypatch.setattr(pictures, "_grayscale", grayscale)

    fails_with(MemoryError())
    with pytest.raises(PictureMemoryError, match=r"^not enough memory to decode this 50x40 picture$"):
        decode_picture(data)
    fails_with(OSError())
    with pytest.raises(PictureError, match=r"^a damaged image: the decoder stopped without saying why$"):
        decode_picture(data)


def test_the_pixel_limit_message_names_the_size_and_the_fix() -> None:
    side = int(MAX_PIXELS**0.5) + 1
    with pytest.raises(PictureError) as refused:
        decode_picture(saved(Image.new("L", (side, side)), "PNG", compress_level=1))
    assert str(refused.value) == (
        f"the picture is {side}x{side} = {side * side:,} pixels, more than the {MAX_PIXELS:,} read here (a guard"
        " against decompression bombs): scale it down, a digit needs no more than a few hundred pixels a side"
    )


def test_a_folder_gives_its_visible_files_and_a_glob_reaches_into_subfolders(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", ".hidden.png", "sub/c.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert find_files(str(tmp_path)) == [tmp_path / "a.png", tmp_path / "b.png"]  # not the folder sub/, not hidden
    assert find_files(f"{tmp_path}/**/*.png") == [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "sub" / "c.png"]
    assert find_files(f"{tmp_path}/*") == [tmp_path / "a.png", tmp_path / "b.png"]  # files only


@pytest.mark.parametrize("kind", ["folder", "pattern"])
def test_nothing_to_predict_is_one_sentence_naming_the_folder_or_the_pattern(tmp_path: Path, kind: str) -> None:
    given = str(tmp_path) if kind == "folder" else f"{tmp_path}/*.png"
    where = f"the folder {tmp_path}" if kind == "folder" else f"the pattern {given!r}"
    with pytest.raises(OwnImagesError) as refused:
        find_files(given)
    assert str(refused.value) == (
        f"--data.predict_images: {where} matches no files. Name a folder holding digit pictures (PNG, JPEG, GIF,"
        " WebP or BMP), or a glob such as 'my_digits/*.png' (quote it so the shell does not expand it)."
    )


def test_own_images_keep_each_file_that_cannot_be_read_as_a_failure(
    test_digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(saved(Image.fromarray(test_digits[0].numpy()), "PNG"))
    read_bytes = Path.read_bytes

    def unreadable_b(path: Path) -> bytes:
        if path.name == "b.png":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", unreadable_b)
    own = load_own_images(str(tmp_path))
    assert own.names == [str(tmp_path / "a.png")] and own.images.shape == (1, 28, 28)
    assert own.failures == {str(tmp_path / "b.png"): "cannot read the file (Permission denied)"}
    (tmp_path / "a.png").write_bytes(b"not a picture")
    nothing = load_own_images(str(tmp_path))
    assert nothing.images.shape == (0, 28, 28) and nothing.images.dtype == torch.uint8 and nothing.names == []
    assert nothing.order == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


SOI, SOS, EOI = b"\xff\xd8", b"\xff\xda\x00\x02", b"\xff\xd9"  # start of image, a scan header (no body), end


@pytest.mark.parametrize(
    ("data", "scans"),
    [
        (SOI + b"\xff\xe0\x00\x06" + SOS + SOS, 1),  # the first segment's bytes are data, even when they look like SOS
        (SOI + b"\xff\xff\xff" + SOS, 1),  # fill bytes before a marker
        (SOI + SOS + b"\x12\xff\x00\xff\x00\x34" + SOS, 2),  # stuffed 0xFF bytes in the entropy-coded data
        (SOI + b"\xff\x01" + SOS, 1),  # TEM, a marker without a length
        (SOI + SOS + b"\xff\xd0\xff\xd1\xff\xd7" + SOS, 2),  # restart markers RST0-RST7 have no length either
        (SOI + SOI + SOS, 1),
        (SOI + SOS + EOI + SOS + b"\x00\x00", 1),  # nothing after the end of the image is counted
        (SOI + SOS, 1),  # a scan header that ends the file
        (SOI + SOS[:3], 0),  # one cut inside its length is not counted
        (SOI + SOS + b"\xff", 1),  # a file that ends in 0xFF
    ],
    ids=["segment", "fill", "stuffing", "tem", "restart", "soi", "after-eoi", "at-end", "cut", "trailing-ff"],
)
def test_scans_are_counted_by_walking_the_markers(data: bytes, scans: int) -> None:
    assert count_jpeg_scans(data, stop_after=100) == scans


def test_counting_scans_stops_at_the_limit_it_is_given() -> None:
    assert count_jpeg_scans(SOI + SOS * 5, stop_after=3) == 3
    assert count_jpeg_scans(SOI + SOS * 5, stop_after=10) == 5


@pytest.mark.parametrize(("error", "message"), [(OSError("broken header"), "broken header"),
                                                (OSError(), "its header cannot be read")])  # fmt: skip
def test_a_header_that_cannot_be_read_is_a_damaged_image(
    monkeypatch: pytest.MonkeyPatch, error: Exception, message: str
) -> None:
    def cannot_open(*args, **kwargs):
        raise error

    monkeypatch.setattr(pictures.Image, "open", cannot_open)
    with pytest.raises(PictureError) as refused:
        decode_picture(b"\x89PNG\r\n\x1a\n")
    assert str(refused.value) == f"a damaged image: {message}"
