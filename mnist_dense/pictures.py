"""Your own digit pictures, made to look like MNIST digits: for `predict --data.predict_images`, `serve` and its page.

MNIST's digits were made this way (LeCun et al.): white ink on black, the ink's bounding box scaled
to fit 20x20 keeping its aspect, then placed in 28x28 so that its centre of mass is the centre. A
dense network only knows digits made like that, so a photo or a drawing gets the same treatment:
grayscale, inverted when dark on light, contrast stretched, cropped to the ink, scaled, centred.

Pictures are decoded with Pillow (which torchvision requires) rather than `torchvision.io`: torchvision
returns GIF and WebP in colour whatever mode is asked, drops a GIF's transparency, and cannot tell a
picture's size before decoding it, so it could not refuse a decompression bomb.
"""

from __future__ import annotations

import glob
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageOps, JpegImagePlugin
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from mnist_dense.constants import IMAGE_SIZE
from mnist_dense.translate import shift_images

DIGIT_BOX = 20  # MNIST scales the ink to fit 20x20 inside 28x28
INK_LEVEL = 0.2  # after contrast stretching, pixels above this fraction of full ink count as ink
PICTURE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")  # only these decoders ever see a file or a request
MAX_PIXELS = 25_000_000  # a 24-megapixel photo passes; a larger picture is refused before it is decoded
# A progressive JPEG is decoded scan by scan, each over the whole picture: libjpeg writes 10 at most, a file made to
# stall a decoder holds thousands (25 s for 15,900 scans of 5000x5000). Counted from the markers before decoding.
MAX_JPEG_SCANS = 100
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")  # Pillow's modes for 16-bit grayscale PNG and TIFF
WORKING_SIDE = 1024  # larger pictures are scaled down first: the digit ends up 20x20 anyway, at a fraction of the cost


class PictureError(ValueError):
    """One picture cannot be used; the message says why (an error row in predict, a 4xx in serve)."""


class PictureMemoryError(PictureError):
    """Decoding the picture ran out of memory (in `serve`, the memory a picture may use)."""


class OwnImagesError(ValueError):
    """`--data.predict_images` names no files; the message says what was looked at and the fix."""


@dataclass
class OwnImages:
    """Prepared digits (N, 28, 28) uint8 with their file names, and the files that could not be used."""

    images: Tensor
    names: list[str]
    failures: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # every file, sorted: the rows of predictions.csv


def find_files(pattern: str) -> list[Path]:
    """A folder (every file in it) or a glob pattern; hidden files are skipped."""
    folder = Path(pattern).expanduser()
    if folder.is_dir():
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        where = f"the folder {folder}"
    else:
        files = [Path(p) for p in glob.glob(str(folder), recursive=True) if Path(p).is_file()]
        where = f"the pattern {pattern!r}"
    if not files:
        raise OwnImagesError(
            f"--data.predict_images: {where} matches no files. Name a folder holding digit pictures"
            " (PNG, JPEG, GIF, WebP or BMP), or a glob such as 'my_digits/*.png' (quote it so the shell does"
            " not expand it)."
        )
    return sorted(files)


def ink_on_black(image: Tensor) -> Tensor:
    """A grayscale uint8 picture (1, H, W) or (H, W) -> float (H, W) in [0, 1]: white ink on black, paper at 0.

    Inverted when dark on light (judged from the border), the paper's level subtracted, the contrast stretched.
    """
    x = image.reshape(image.shape[-2:]).float()
    border = torch.cat([x[0], x[-1], x[:, 0], x[:, -1]])
    if border.median() > 127:  # dark ink on light paper: MNIST is light ink on black
        x, border = 255 - x, 255 - border
    x = (x - border.median()).clamp_min(0)
    if x.max() <= 0:
        raise PictureError("no ink found: the picture is one flat colour")
    return x / x.max()


def prepare_digit(image: Tensor) -> Tensor:
    """A grayscale uint8 picture (1, H, W) or (H, W) of one digit -> an MNIST-like uint8 (28, 28)."""
    x = ink_on_black(image)
    ink = x > INK_LEVEL
    rows, cols = ink.any(dim=1).nonzero().flatten(), ink.any(dim=0).nonzero().flatten()
    x = x[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = x.shape
    scale = DIGIT_BOX / max(height, width)
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    x = TF.resize(x[None], size, antialias=True)[0].clamp(0, 1)
    canvas = torch.zeros(IMAGE_SIZE, IMAGE_SIZE)
    top, left = (IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2
    canvas[top : top + size[0], left : left + size[1]] = x
    digit = (canvas * 255).round().to(torch.uint8)
    if not digit.any():
        raise PictureError(_ink_vanishes(f"the {width}x{height} pixels the ink spans are scaled to fit 20x20"))
    return center_by_mass(digit)


def prepare_as_drawn(image: Tensor) -> Tensor:
    """The whole picture scaled to 28x28 as it lies, ink where it was drawn: no cropping, no scaling of the digit
    to 20x20, no centring. What a network sees of a drawing unless someone prepares it as MNIST's digits were.

    White ink on black as `prepare_digit` makes it; a picture that is not square is padded with paper on both
    sides of its shorter one first, so that nothing is stretched.
    """
    x = ink_on_black(image)
    height, width = x.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    x = torch.nn.functional.pad(x, (left, side - width - left, top, side - height - top))
    x = TF.resize(x[None], [IMAGE_SIZE, IMAGE_SIZE], antialias=True)[0].clamp(0, 1)
    digit = (x * 255).round().to(torch.uint8)
    if not digit.any():
        raise PictureError(_ink_vanishes(f"the {side}x{side} picture is scaled to 28x28"))
    return digit


def _ink_vanishes(scaling: str) -> str:
    return (
        f"no ink is left when {scaling}: the strokes are too thin or too faint for the size of the picture;"
        " draw them thicker, or crop the picture closer to the digit"
    )


def center_by_mass(digit: Tensor) -> Tensor:
    """Shift a (28, 28) digit by whole pixels so that its centre of mass is the image centre."""
    mass = digit.float()
    coords = torch.arange(IMAGE_SIZE, dtype=torch.float)
    row = (mass.sum(dim=1) * coords).sum() / mass.sum()
    col = (mass.sum(dim=0) * coords).sum() / mass.sum()
    centre = (IMAGE_SIZE - 1) / 2
    return shift_images(digit[None], round(float(centre - row)), round(float(centre - col)))[0]


def decode_picture(source: bytes | str | Path, admit: Callable[[int, int], None] | None = None) -> Tensor:
    """A PNG, JPEG, GIF, WebP or BMP file or its bytes -> grayscale uint8 (1, H, W) as the eye sees it.

    Transparency is composited on white (a dark digit on a transparent canvas stays a dark digit), the first
    frame of an animation is taken, a photo's EXIF rotation is applied (EXIF that cannot be read leaves the picture
    as stored), and 16-bit grayscale is scaled to 8 bits. `admit(width, height)` is called once the header has
    passed the guards, before any pixel is decoded; whatever it raises passes through (serve's decoders use it to
    share out their time). A file that cannot be opened raises OSError; anything wrong with the picture raises
    `PictureError`.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    with _open_checked(data) as picture:
        if admit is not None:
            admit(*picture.size)
        try:
            picture.draft("L", (WORKING_SIDE, WORKING_SIDE))  # a JPEG decodes at a reduced scale; others: no-op
            _turn_upright(picture)
            gray = _grayscale(picture)
            gray.thumbnail((WORKING_SIDE, WORKING_SIDE))
        except MemoryError:
            raise PictureMemoryError(
                f"not enough memory to decode this {picture.width}x{picture.height} picture"
            ) from None
        except Exception as err:  # Pillow reports damaged data with many exception types (OSError, zlib.error...)
            raise PictureError(f"a damaged image: {str(err) or 'the decoder stopped without saying why'}") from None
    return TF.pil_to_tensor(gray)


def _open_checked(data: bytes) -> Image.Image:
    """Only the header and a JPEG's markers are read before the guards: a picture made to cost memory or time is
    refused before it is decoded."""
    try:
        picture = Image.open(io.BytesIO(data), formats=PICTURE_FORMATS)
    except Image.DecompressionBombError:  # Pillow's own guard, which refuses even the header of a larger one
        raise PictureError(_too_many_pixels(f"over {2 * Image.MAX_IMAGE_PIXELS:,} pixels")) from None
    except Image.UnidentifiedImageError:
        raise PictureError("not a readable image (use PNG, JPEG, GIF, WebP or BMP)") from None
    except Exception as err:
        raise PictureError(f"a damaged image: {str(err) or 'its header cannot be read'}") from None
    width, height = picture.size
    if width * height > MAX_PIXELS:
        picture.close()
        raise PictureError(_too_many_pixels(f"{width}x{height} = {width * height:,} pixels"))
    # Every file Pillow decodes as JPEG scans: JPEG, and MPO (a JPEG with an APP2 "MPF" segment, which Pillow opens
    # as MpoImageFile, a JpegImageFile); only its first image is decoded, and the count stops at its end.
    jpeg_scans = isinstance(picture, JpegImagePlugin.JpegImageFile)
    if jpeg_scans and count_jpeg_scans(data, stop_after=MAX_JPEG_SCANS + 1) > MAX_JPEG_SCANS:
        picture.close()
        raise PictureError(
            f"the JPEG holds more than {MAX_JPEG_SCANS} scans (progressive passes over the whole picture; an encoder"
            " writes about 10), a guard against pictures made to be slow to decode: save it as an ordinary JPEG or PNG"
        )
    return picture


def count_jpeg_scans(data: bytes, stop_after: int) -> int:
    """Start-of-scan markers in a JPEG's marker stream, without decoding (counting stops at `stop_after`).

    Segments are skipped by their length, so an EXIF thumbnail's markers are not counted; in entropy-coded data a
    0xFF byte is followed by 0x00 (stuffing) or a restart marker, never by a segment's marker.
    """
    scans, at = 0, 2  # after SOI
    while scans < stop_after and 0 <= (at := data.find(b"\xff", at)) < len(data) - 3:
        marker = data[at + 1]
        if marker == 0xD9:  # end of image
            break
        if marker in (0x00, 0x01, 0xD8, 0xFF) or 0xD0 <= marker <= 0xD7:  # stuffing, fill, restart: no length
            at += 1 if marker == 0xFF else 2
            continue
        scans += marker == 0xDA
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return scans


def _turn_upright(picture: Image.Image) -> None:
    """Apply the EXIF orientation in place; EXIF that cannot be read or written back leaves the picture as it is.

    Pillow rotates first and then rewrites the EXIF without the orientation, which fails for tags of unusual types
    (a rational where text belongs): the picture is already upright then, and its EXIF is not needed here.
    """
    try:
        ImageOps.exif_transpose(picture, in_place=True)
    except MemoryError:
        raise
    except Exception:  # the EXIF only says how to turn the picture; the picture as stored is still the picture
        pass


def _too_many_pixels(size: str) -> str:
    return (
        f"the picture is {size}, more than the {MAX_PIXELS:,} read here"
        " (a guard against decompression bombs): scale it down, a digit needs no more than a few hundred pixels a side"
    )


def _grayscale(picture: Image.Image) -> Image.Image:
    """Any Pillow mode -> "L". Transparent pixels become white paper, unless that hides the ink (a light digit)."""
    if picture.mode in SIXTEEN_BIT_MODES:
        picture = picture.point(lambda value: value / 257)  # convert("L") would clip 16-bit values at 255
    if picture.mode not in ("RGBA", "LA", "PA") and "transparency" not in picture.info:
        return picture.convert("L")
    rgba = picture.convert("RGBA")
    on_white = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("L")
    low, high = on_white.getextrema()
    if low == high and rgba.getchannel("A").getextrema()[0] < 255:  # light ink on a transparent background
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "black"), rgba).convert("L")
    return on_white


def prepare_picture(
    source: bytes | str | Path, admit: Callable[[int, int], None] | None = None, as_drawn: bool = False
) -> Tensor:
    """A picture file or its bytes -> the MNIST-like uint8 (28, 28) digit the network sees, or `PictureError`.

    The one preparation that `predict --data.predict_images`, `serve` and the drawing page share (`admit`: see
    `decode_picture`); `as_drawn` scales the whole picture instead (`prepare_as_drawn`), for the page's switch.
    """
    gray = decode_picture(source, admit)
    return prepare_as_drawn(gray) if as_drawn else prepare_digit(gray)


def load_own_images(pattern: str) -> OwnImages:
    """Read and prepare every file; one that is not a usable digit picture is kept as a failure, never a crash."""
    files = find_files(pattern)
    images, names, failures = [], [], {}
    for path in files:
        try:
            images.append(prepare_picture(path))
            names.append(str(path))
        except PictureError as err:
            failures[str(path)] = str(err)
        except OSError as err:  # the file itself cannot be read (permissions, a folder that vanished)
            failures[str(path)] = f"cannot read the file ({err.strerror or err})"
    stacked = torch.stack(images) if images else torch.zeros(0, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    return OwnImages(stacked, names, failures, [str(p) for p in files])
