"""Pictures made to cost a server time or memory, generated with Pillow: for `make bench-serve` and the tests.

- `many_scan_jpeg`: a progressive JPEG whose last scan is repeated thousands of times. Each scan of a progressive
  JPEG is a pass over the whole picture, so 12,000 scans of 5000x5000 pixels (about 770 KB) take libjpeg tens of
  seconds, while an encoder writes about 10. Built from Pillow's own progressive file: the scan and the Huffman
  table before it are copied, so every scan is valid and libjpeg decodes them all.
- `as_mpo`: the same JPEG wrapped as MPO (a multi-picture JPEG), which Pillow reports as a format of its own.
- `large_png`: a legal 5000x5000 RGBA PNG of a digit, about 115 KB that decode to 100 MB of pixels.
- `empty_chunk_png`: a legal 28x28 PNG of a digit with 900,000 empty private chunks before its pixels (10.8 MB):
  small in pixels, so no pixel limit applies, and seconds of Pillow's chunk reading.
- `picture_attacker`: a client that sends such pictures in a loop, whatever the answers.
- `protocol_attacker`: a client of the HTTP layer, looping endless chunked trailers, pipelining floods, answers
  never read, trickled headers, 8 MB of headers and 16 MB bodies, with idle sockets held open beside them.
- `attackers`: both kinds at once, each from its own address, in a process of their own at the lowest CPU priority
  (`lowest_priority`: nice 19 in a scheduling group of its own).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from typing import Any

from PIL import Image, ImageDraw

from benchmarks.serve_process import connect

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


# Clients that attack the HTTP layer rather than the decoders: what the front server (`serve --public`) bounds.
# Each runs for at most `PROTOCOL_SHAPE_S` on one connection (or a few), then the next shape begins.
PROTOCOL_SHAPE_S = 2.0
HEAD = b"Host: digits\r\n"


def endless_trailer(sock: socket.socket, stop: threading.Event) -> None:
    """A chunked body that ends in a trailer whose value never ends."""
    sock.sendall(b"POST /predict HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: ")
    deadline = time.monotonic() + PROTOCOL_SHAPE_S
    while time.monotonic() < deadline and not stop.is_set():
        sock.sendall(b"a" * 65_536)


def pipelining_flood(sock: socket.socket, stop: threading.Event) -> None:
    """Requests written back to back, never read."""
    deadline = time.monotonic() + PROTOCOL_SHAPE_S
    while time.monotonic() < deadline and not stop.is_set():
        sock.sendall((b"GET /health HTTP/1.1\r\n" + HEAD + b"\r\n") * 500)


def never_reads(sock: socket.socket, stop: threading.Event) -> None:
    """Asks for the page again and again and reads nothing of the answers."""
    sock.sendall((b"GET /draw HTTP/1.1\r\n" + HEAD + b"\r\n") * 50)
    stop.wait(PROTOCOL_SHAPE_S)


def trickled_headers(sock: socket.socket, stop: threading.Event) -> None:
    """A request head sent a byte at a time (slowloris)."""
    deadline = time.monotonic() + PROTOCOL_SHAPE_S
    for byte in b"GET /health HTTP/1.1\r\n" + HEAD + b"X-Slow: " + b"s" * 1000:
        if time.monotonic() > deadline or stop.is_set():
            return
        sock.sendall(bytes([byte]))
        time.sleep(0.05)


def huge_headers(sock: socket.socket, stop: threading.Event) -> None:
    """8 MB of header lines."""
    sock.sendall(b"GET /health HTTP/1.1\r\n" + HEAD)
    line = b"X-Padding: " + b"p" * 8_000 + b"\r\n"
    for _ in range(1_000):
        if stop.is_set():
            return
        sock.sendall(line)


def huge_body(sock: socket.socket, stop: threading.Event) -> None:
    """A 16 MB body (the most the service takes), then the answer is read."""
    size = 16_000_000
    sock.sendall(b"POST /predict HTTP/1.1\r\n" + HEAD + b"Content-Type: application/json\r\n"
                 + f"Content-Length: {size}\r\n\r\n".encode())  # fmt: skip
    block = b" " * 1_000_000
    for _ in range(size // len(block)):
        if stop.is_set():
            return
        sock.sendall(block)
    sock.recv(65_536)


PROTOCOL_SHAPES = (endless_trailer, pipelining_flood, never_reads, trickled_headers, huge_headers, huge_body)


def protocol_attacker(port: int, source: str, stop: Any, paused: Any, idle: int = 20) -> None:
    """Loops over `PROTOCOL_SHAPES` from `source`, with `idle` sockets held open beside them, until `stop`."""
    held: list[socket.socket] = []
    while not stop.is_set():
        for shape in PROTOCOL_SHAPES:
            while paused.is_set() and not stop.is_set():
                for sock in held:
                    sock.close()
                held.clear()
                time.sleep(0.1)
            if stop.is_set():
                break
            with contextlib.suppress(OSError):
                while len(held) < idle:
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as sock:
                    shape(sock, stop)
            except OSError:
                pass  # refused, reset or timed out: what the front server should do to these
    for sock in held:
        sock.close()


def picture_attacker(
    port: int,
    source: str,
    bodies: dict[str, bytes],
    first: int,
    stop: Any,
    paused: Any,
    counting: Any,
    answers: Counter[str],
) -> None:
    """POSTs `bodies` (JSON, by kind) in turn from `first` on, until `stop`; counts each answer by kind and status in
    `answers` while `counting`. It goes on whatever the answer (503 and Retry-After included), as an attacker does."""
    kinds = list(bodies)
    connection = connect(port, source)
    for i in range(first, 10**9):
        while paused.is_set() and not stop.is_set():
            time.sleep(0.1)
        if stop.is_set():
            break
        kind = kinds[i % len(kinds)]
        try:
            connection.request("POST", "/predict", body=bodies[kind], headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            answer = str(response.status)
        except (OSError, http.client.HTTPException):
            answer = "no answer"
            connection.close()
            connection = connect(port, source)
        if counting.is_set():
            answers[f"{kind} {answer}"] += 1
    connection.close()


def attackers(
    port: int,
    picture_sources: list[str],
    protocol_sources: list[str],
    bodies: dict[str, bytes],
    stop: Any,
    paused: Any,
    counting: Any,
    results: Any,
) -> None:
    """`picture_attacker` from each of `picture_sources` and `protocol_attacker` from each of `protocol_sources`, all
    at once, until `stop`; the pictures' answers by kind go onto the `results` queue at the end.

    Run in a process of its own, at the lowest CPU priority (`lowest_priority`): a public service's attackers run on
    their own machines, so neither their interpreter lock nor their CPU time should slow the clients being timed, or
    the service, beyond what the attack itself costs the service; they still take every moment of CPU left idle. What
    nginx and the service spend on their requests is counted at full priority. They stop by themselves when the
    process that started them is gone."""
    lowest_priority()
    threading.Thread(target=stop_when_orphaned, args=(stop,), daemon=True).start()
    answers: list[Counter[str]] = [Counter() for _ in picture_sources]  # one each: no two threads add to one
    threads = [
        threading.Thread(target=picture_attacker, args=(port, source, bodies, i, stop, paused, counting, answers[i]))
        for i, source in enumerate(picture_sources)
    ] + [threading.Thread(target=protocol_attacker, args=(port, source, stop, paused)) for source in protocol_sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(dict(sum(answers, Counter())))


def lowest_priority() -> None:
    """nice 19, in a session of its own whose autogroup is at nice 19 as well.

    Where the kernel groups processes by session for scheduling (autogroup, on by default in Debian's kernels), a
    group gets the CPU as one task of nice 0 whatever the nice of its processes: nice 19 within the benchmark's own
    session would still give the attackers half the machine whenever the timed clients wait for an answer.
    """
    os.setsid()
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as autogroup:  # absent without autogroup
        autogroup.write("19")
    os.nice(19)


def stop_when_orphaned(stop: Any) -> None:
    """Sets `stop` once the parent process is gone: in a session of its own, Ctrl-C no longer reaches this one."""
    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:
            stop.set()
