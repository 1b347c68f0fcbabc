"""The one preparation of pictures people send (predict, serve, the page): every format, transparency, bad files.

Real MNIST test digits are saved the way people's files hold them (PNG, JPEG, GIF, WebP, BMP, with or
without transparency, 16-bit, rotated by EXIF) and must come back as the digit that the PNG gives.
"""

from __future__ import annotations

import io
import re
import struct

import pytest
import torch
from PIL import Image, ImageOps

from benchmarks.hostile import many_scan_jpeg
from mnist_dense.data import load_split
from mnist_dense.pictures import (
    MAX_JPEG_SCANS,
    MAX_PIXELS,
    PictureError,
    count_jpeg_scans,
    decode_picture,
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
    with pytest.raises(PictureError, match="over .* pixels, more than the 25,000,000 read here"):
        decode_picture(bomb)


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
