"""`serve`'s pictures are decoded and prepared in a pool of processes, never on the HTTP event loop.

A request's body goes to a free decoder process as it came (JSON parsing and base64 too cost time in proportion
to the body), and comes back as the prepared 28x28 digit or as the one-sentence refusal. Each picture has a time
budget (a decoder that runs over is ended and replaced) and a memory budget (the decoder's address space is
capped). Demanding pictures, those over `large_picture_pixels`, bodies over `large_body_bytes` and those of a
client address whose pictures took seconds lately (`ClientTime`), may only use all decoders but one together, so that
cheap pictures always find one;
when no decoder is free within a short wait the answer is 503 with Retry-After, never an unbounded queue. Decoders
are forked from a forkserver that has imported torch and Pillow once (`decoder_preload`): a replacement starts in
milliseconds and shares those pages.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import multiprocessing
import os
import resource
import signal
import socket
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from fastapi import HTTPException
from PIL import Image

from mnist_dense.deploy.limits import ServiceLimits
from mnist_dense.pictures import PictureError, PictureMemoryError, prepare_picture

REQUEST_EXAMPLE = '{"image": "<base64 PNG or JPEG, or a data: URL>"}'
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "true or false", type(None): "null"}  # fmt: skip
START_TIMEOUT_S = 120  # a decoder forks from the forkserver; the forkserver's first start imports torch
# Frames between the HTTP process and a decoder: a job is a 4-byte length and the body; an answer is one kind byte,
# a 4-byte length and its payload. A decoder that meets a large picture asks first (LARGE) and waits for one byte.
READY, DIGIT, REFUSED, LARGE, BUSY, OUT_OF_MEMORY = b"R", b"D", b"E", b"L", b"B", b"M"


class RequestError(ValueError):
    """A request body that holds no usable picture: the status and the one sentence that says why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class DecodersBusy(Exception):
    """The decoders' share for large pictures is taken."""


class DecoderDied(Exception):
    """The decoder's connection closed in the middle of a job: the process was killed or crashed."""


def picture_bytes(value: Any) -> bytes:
    """The request's `image`: base64, or a data: URL holding base64 -> the picture file's bytes."""
    if not isinstance(value, str):
        kind = JSON_TYPES.get(type(value), "not a string")
        raise ValueError(f"image must be a string (a picture in base64, or a data: URL), not {kind}")
    text = value.strip()
    if text[:5].lower() == "data:":
        header, _, text = text.partition(",")
        if not header.lower().endswith(";base64"):
            raise ValueError("image is a data: URL but not base64 (expected data:image/png;base64,...)")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "image is not valid base64 (send the picture's bytes base64-encoded, or a data: URL)"
        ) from None


def request_picture(body: bytes) -> tuple[bytes, bool]:
    """The body of `POST /predict` -> the picture file's bytes and `as_drawn`, or `RequestError` with the sentence
    for the client. `"as_drawn": true` asks for the whole picture scaled to 28x28 instead of MNIST's preparation."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise RequestError(400, f"the body is not JSON; send {REQUEST_EXAMPLE}") from None
    if not isinstance(payload, dict):
        raise RequestError(400, f"the body must be a JSON object (Content-Type: application/json): {REQUEST_EXAMPLE}")
    if "image" not in payload:
        raise RequestError(422, f"no 'image' field in the body; send {REQUEST_EXAMPLE}")
    as_drawn = payload.get("as_drawn", False)
    if not isinstance(as_drawn, bool):
        raise RequestError(422, f"as_drawn must be true or false, not {JSON_TYPES.get(type(as_drawn), 'that')}")
    try:
        return picture_bytes(payload["image"]), as_drawn
    except ValueError as err:
        raise RequestError(422, str(err)) from None


# The decoder process.


def run_decoder(connection: socket.socket, memory_mb: int, large_pixels: int) -> None:
    """A decoder's life: warm up, cap its memory, then answer jobs until the HTTP process closes the connection."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the HTTP process stops decoders
    warnings.simplefilter("ignore")  # Pillow's warnings about a client's file ("Corrupt EXIF data") are not the log's
    torch.set_num_threads(1)  # one picture a process; the pool is sized to the cores
    prepare_picture(warm_up_picture())  # lazy imports and allocations happen before the memory cap
    cap_memory(memory_mb)
    with contextlib.suppress(ConnectionError):  # the HTTP process has gone: so does the decoder, quietly
        connection.sendall(READY)
        while (size := receive_exactly(connection, 4)) is not None:
            body = receive_exactly(connection, int.from_bytes(size, "big")) or b""
            kind, payload = answer_job(connection, body, large_pixels)
            connection.sendall(kind + len(payload).to_bytes(4, "big") + payload)


def answer_job(connection: socket.socket, body: bytes, large_pixels: int) -> tuple[bytes, bytes]:
    def ask_for_large(width: int, height: int) -> None:
        if width * height > large_pixels:
            connection.sendall(LARGE + bytes(4))
            if receive_exactly(connection, 1) != b"Y":
                raise DecodersBusy

    try:
        picture, as_drawn = request_picture(body)
        return DIGIT, prepare_picture(picture, admit=ask_for_large, as_drawn=as_drawn).numpy().tobytes()
    except DecodersBusy:
        return BUSY, b""
    except (PictureMemoryError, MemoryError):
        return OUT_OF_MEMORY, b""
    except RequestError as err:
        return REFUSED, err.status.to_bytes(2, "big") + str(err).encode()
    except PictureError as err:
        return REFUSED, (422).to_bytes(2, "big") + str(err).encode()
    except Exception:  # a fault of the server's own, not of the picture: in its log, and the decoder goes on
        traceback.print_exc()
        return REFUSED, (500).to_bytes(2, "big") + b"the server failed while preparing the picture (see its log)"


def receive_exactly(connection: socket.socket, size: int) -> bytes | None:
    """`size` bytes, or None when the other side has closed the connection."""
    parts, left = [], size
    while left:
        part = connection.recv(min(left, 1 << 20))
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def warm_up_picture() -> bytes:
    picture = Image.new("L", (28, 28))
    picture.paste(255, (12, 4, 16, 24))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def cap_memory(extra_mb: int) -> None:
    """Cap the address space at what the decoder uses now plus `extra_mb`: beyond, allocations fail (MemoryError).

    Linux only (/proc); elsewhere the time budget is the only guard.
    """
    statm = Path("/proc/self/statm")
    if not statm.exists():
        return
    used = int(statm.read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    limit = used + extra_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


# The HTTP process' side.


class Decoder:
    """One decoder process and the HTTP process' end of its connection."""

    def __init__(self, process, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.process, self.reader, self.writer = process, reader, writer

    @classmethod
    async def start(cls, limits: ServiceLimits) -> Decoder:
        ours, theirs = socket.socketpair()
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["mnist_dense.deploy.decoder_preload"])  # imported once for every decoder
        process = context.Process(
            target=run_decoder,
            args=(theirs, limits.decode_memory_mb, limits.large_picture_pixels),
            name="picture-decoder",
            daemon=True,
        )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, process.start)  # forking blocks for milliseconds (the first time, seconds)
        theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours, limit=1 << 16)
        decoder = cls(process, reader, writer)
        try:
            if await asyncio.wait_for(reader.readexactly(1), START_TIMEOUT_S) != READY:
                raise RuntimeError("a picture decoder started wrongly")
        except BaseException:
            await decoder.end()
            raise
        return decoder

    async def run(self, body: bytes, grant_large: Callable[[], bool]) -> tuple[bytes, bytes]:
        """Send the job, answer the decoder's question about a large picture, return (kind, payload)."""
        self.writer.write(len(body).to_bytes(4, "big"))
        self.writer.write(body)
        await self.writer.drain()
        while True:
            kind = await self.reader.readexactly(1)
            payload = await self.reader.readexactly(int.from_bytes(await self.reader.readexactly(4), "big"))
            if kind != LARGE:
                return kind, payload
            self.writer.write(b"Y" if grant_large() else b"N")
            await self.writer.drain()

    async def end(self, grace_s: float = 0.0) -> None:
        """Close the connection (the decoder then exits), give it `grace_s`, then kill it."""
        self.writer.close()

        def wait_or_kill() -> None:
            self.process.join(grace_s)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)

        await asyncio.get_running_loop().run_in_executor(None, wait_or_kill)


class ClientTime:
    """Seconds of decoding counted against each client address, forgotten at a steady rate (a leaky bucket).

    Only what a picture holds a decoder beyond `client_decode_free_s` counts. At most `MAX_CLIENTS` addresses are
    remembered: beyond, those least recently charged are forgotten first.
    """

    MAX_CLIENTS = 100_000

    def __init__(self, limits: ServiceLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.free_s, self.forget, self.clock = limits.client_decode_free_s, limits.client_decode_forget, clock
        self.counted: dict[str, tuple[float, float]] = {}  # address -> (seconds, when they were counted)

    def seconds(self, client: str) -> float:
        counted, at = self.counted.get(client, (0.0, 0.0))
        return max(0.0, counted - self.forget * (self.clock() - at))

    def charge(self, client: str, held_s: float) -> None:
        if held_s <= self.free_s:
            return
        counted = self.seconds(client) + held_s - self.free_s
        self.counted.pop(client, None)  # re-inserted last: the dict's order is the order of charging
        self.counted[client] = (counted, self.clock())
        while len(self.counted) > self.MAX_CLIENTS:
            del self.counted[next(iter(self.counted))]


class PicturePool:
    """`await pool.prepare(body, client)` -> the prepared digit's 784 bytes, or an HTTPException with the sentence to
    send. `client` is the client's address: what its pictures cost is counted against it (`ClientTime`)."""

    def __init__(self, limits: ServiceLimits) -> None:
        self.limits = limits
        self.decoders: set[Decoder] = set()
        self.idle: list[Decoder] = []
        self.free: asyncio.Semaphore | None = None  # counts idle decoders; made on the event loop that serves
        # Decoders that demanding pictures (large ones, those of heavy clients) may hold together, and hold now.
        self.share, self.share_busy = max(1, limits.decoders - 1), 0
        self.client_time = ClientTime(limits)
        self.heavy_decoding: set[str] = set()  # heavy client addresses with a picture in a decoder (one each)
        self.replacing: set[asyncio.Task] = set()
        self.stopping = False

    async def start(self) -> None:
        self.free = asyncio.Semaphore(0)
        decoders = await asyncio.gather(*(Decoder.start(self.limits) for _ in range(self.limits.decoders)))
        self.decoders.update(decoders)
        for decoder in decoders:
            self.put_back(decoder)

    async def stop(self) -> None:
        """Every decoder ends: idle ones exit when their connection closes; one still decoding has no one waiting
        for its picture any more (the server's grace period is over) and is killed."""
        self.stopping = True
        await asyncio.gather(*self.replacing, return_exceptions=True)  # they end their decoder and start none
        await asyncio.gather(*(decoder.end(grace_s=0.1) for decoder in self.decoders))
        self.decoders.clear()
        self.idle.clear()

    def put_back(self, decoder: Decoder) -> None:
        self.idle.append(decoder)
        self.free.release()

    def replace(self, decoder: Decoder) -> None:
        """End a decoder whose state is unknown (over time, crashed, cancelled) and start another in the background."""
        self.decoders.discard(decoder)

        async def replacement() -> None:
            await decoder.end()
            if not self.stopping:
                started = await Decoder.start(self.limits)
                self.decoders.add(started)
                if not self.stopping:
                    self.put_back(started)

        task = asyncio.get_running_loop().create_task(replacement())
        self.replacing.add(task)
        task.add_done_callback(self.replacing.discard)

    async def prepare(self, body: bytes, client: str = "-") -> bytes:
        """A decoder that dies under a picture (killed, crashed) is a fault of the server's, not of the picture: the
        picture is tried once more on another decoder, then the answer is 503 with Retry-After, never a 4xx."""
        for _ in range(2):
            with contextlib.suppress(DecoderDied):
                return await self._prepare_once(body, client)
        raise self.retry_later(
            "the picture decoder stopped twice while preparing this picture (a fault of the server's, not of the"
            f" picture); retry in {self.limits.retry_after_s} s"
        )

    def retry_later(self, detail: str) -> HTTPException:
        """503 with Retry-After: the server cannot take the picture now, through no fault of the picture."""
        return HTTPException(503, detail, headers={"Retry-After": str(self.limits.retry_after_s)})

    async def _take_decoder(self) -> Decoder:
        """An idle decoder that is alive; one found dead is replaced, and the wait goes on for another."""
        deadline = asyncio.get_running_loop().time() + self.limits.decoder_wait_s
        while True:
            try:
                await asyncio.wait_for(self.free.acquire(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:
                raise self.retry_later(
                    f"every picture decoder is busy; retry in {self.limits.retry_after_s} s"
                ) from None
            decoder = self.idle.pop()
            if decoder.process.is_alive():
                return decoder
            self.replace(decoder)

    def admit_heavy(self, client: str) -> bool:
        """True when `client` is heavy and now holds its place in the share; 503 at once when it has none."""
        counted = self.client_time.seconds(client)
        if counted <= self.limits.client_decode_heavy_s:
            return False
        if client in self.heavy_decoding or not self.take_share():
            raise self.retry_later(
                f"pictures from your address took {counted:.1f} s of decoding lately, more than"
                f" {self.limits.client_decode_heavy_s:g} s: they are decoded one at a time, on the decoders that other"
                f" clients leave free, and none is free now; retry in {self.limits.retry_after_s} s"
            )
        self.heavy_decoding.add(client)
        return True

    def admit_large_body(self, body: bytes) -> bool:
        """True when the body is over `large_body_bytes` and now holds its place in the share; 503 at once when the
        share is taken."""
        if len(body) <= self.limits.large_body_bytes:
            return False
        if not self.take_share():
            raise self.retry_later(
                f"the decoders for requests over {self.limits.large_body_bytes:,} bytes are busy; retry in"
                f" {self.limits.retry_after_s} s, or send a smaller picture (a digit needs a few KB)"
            )
        return True

    def take_share(self) -> bool:
        """A place in the share of demanding pictures (all decoders but one), if one is free: True, and it is held."""
        if self.share_busy >= self.share:
            return False
        self.share_busy += 1
        return True

    async def _prepare_once(self, body: bytes, client: str) -> bytes:
        heavy = holds_share = self.admit_heavy(client)
        holds_share = holds_share or self.admit_large_body(body)
        try:
            decoder = await self._take_decoder()
        except BaseException:
            self.share_busy -= holds_share
            if heavy:
                self.heavy_decoding.discard(client)
            raise
        taken, healthy = time.monotonic(), False

        def grant_large() -> bool:
            nonlocal holds_share
            holds_share = holds_share or self.take_share()
            return holds_share

        try:
            kind, payload = await asyncio.wait_for(decoder.run(body, grant_large), self.limits.decode_time_s)
            healthy = True
        except asyncio.TimeoutError:
            raise HTTPException(
                422,
                f"decoding the picture took more than {self.limits.decode_time_s:g} s, the most a picture may take"
                " here: send a smaller picture, or save it again as an ordinary PNG or JPEG",
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise DecoderDied from None
        finally:
            self.client_time.charge(client, time.monotonic() - taken)
            self.share_busy -= holds_share
            if heavy:
                self.heavy_decoding.discard(client)
            if healthy:
                self.put_back(decoder)
            else:
                self.replace(decoder)
        if kind == DIGIT:
            return payload
        if kind == REFUSED:
            raise HTTPException(int.from_bytes(payload[:2], "big"), payload[2:].decode())
        if kind == OUT_OF_MEMORY:
            raise HTTPException(
                422,
                f"decoding the picture needs more than the {self.limits.decode_memory_mb:,} MB of memory a picture"
                " may use here: send a smaller picture",
            )
        raise self.retry_later(
            f"the decoders for pictures over {self.limits.large_picture_pixels:,} pixels are busy; retry in"
            f" {self.limits.retry_after_s} s, or send a smaller picture (a digit needs a few hundred pixels a side)"
        )
