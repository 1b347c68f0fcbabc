"""Pictures made to cost a server time or memory, generated with Pillow: for `make bench-serve` and the tests.

- `many_scan_jpeg`: a progressive JPEG whose last scan is repeated thousands of times. Each scan of a progressive
  JPEG is a pass over the whole picture, so 12,000 scans of 5000x5000 pixels (about 770 KB) take libjpeg tens of
  seconds, while an encoder writes about 10. Built from Pillow's own progressive file: the scan and the Huffman
  table before it are copied, so every scan is valid and libjpeg decodes them all.
- `as_mpo`: the same JPEG wrapped as MPO (a multi-picture JPEG), which Pillow reports as a format of its own.
- `large_png`: a legal 5000x5000 RGBA PNG of a digit, about 115 KB that decode to 100 MB of pixels.
- `empty_chunk_png`: a legal 28x28 PNG of a digit with 900,000 empty private chunks before its pixels (10.8 MB):
  small in pixels, so no pixel limit applies, and seconds of Pillow's chunk reading.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageDraw

DHT, SOS, EOI, APP2 = 0xC4, 0xDA, 0xD9, 0xE2


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment after SOI; a scan's segment runs to the end of its entropy-coded data."""
    segments, at = [], 2
    while at < len(data):
        marker = data[at + 1]
        if marker == EOI:
            segments.append((marker, at, at + 2))
            return segments
        end = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == SOS:  # entropy-coded data: 0xFF is followed by 0x00 (stuffing) or a restart marker
            while data[(end := data.find(b"\xff", end)) + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                end += 2
        segments.append((marker, at, end))
        at = end
    return segments


def many_scan_jpeg(side: int = 5000, scans: int = 12_000) -> bytes:
    """A blank grayscale progressive JPEG of side x side pixels with about `scans` scans."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), 255).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    segments = jpeg_segments(data)
    last_scan = max(i for i, (marker, _, _) in enumerate(segments) if marker == SOS)
    first = last_scan - 1 if segments[last_scan - 1][0] == DHT else last_scan  # the scan's own Huffman table too
    repeated = data[segments[first][1] : segments[last_scan][2]]
    existing = sum(marker == SOS for marker, _, _ in segments)
    end = segments[-1][1]
    return data[:end] + repeated * max(0, scans - existing) + data[end:]


def as_mpo(jpeg: bytes) -> bytes:
    """The JPEG with the APP2 "MPF" segment of a two-image MPO inserted after SOI: Pillow then opens it as MPO, a
    format of its own, and decodes the JPEG's scans as its first image."""
    buffer = io.BytesIO()
    frame = Image.new("L", (8, 8))
    frame.save(buffer, "MPO", save_all=True, append_images=[frame])
    mpo = buffer.getvalue()
    (start, end), *_ = [(start, end) for marker, start, end in jpeg_segments(mpo) if marker == APP2]
    return jpeg[:2] + mpo[start:end] + jpeg[2:]


def large_png(side: int = 5000) -> bytes:
    """A dark 7 on a transparent side x side RGBA canvas, as a drawing app would save a large drawing."""
    picture = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(picture).line(
        [(0.3 * side, 0.2 * side), (0.7 * side, 0.2 * side), (0.45 * side, 0.8 * side)],
        fill=(0, 0, 0, 255),
        width=side // 20,
    )
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def empty_chunk_png(chunks: int = 900_000) -> bytes:
    """A 28x28 grayscale 7 with `chunks` empty `prVt` chunks (ancillary, private: a decoder skips them) before IDAT."""
    picture = Image.new("L", (28, 28))
    ImageDraw.Draw(picture).line([(8, 6), (20, 6), (12, 22)], fill=255, width=3)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    png = buffer.getvalue()
    pixels = png.index(b"IDAT") - 4  # the IDAT chunk starts with its 4-byte length
    return png[:pixels] + png_chunk(b"prVt") * chunks + png[pixels:]
