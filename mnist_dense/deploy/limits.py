"""Every size and time a client of `serve` controls, in one place; the README's serving section lists them.

The picture guards that `predict` shares (25,000,000 pixels, 100 JPEG scans) are in `mnist_dense.pictures`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class ServiceLimits:
    """What one client may make the service hold: bytes, seconds, connections, decoders. Beyond, a 4xx or 5xx."""

    # 413 beyond. A 12-megapixel phone JPEG (3-8 MB) is up to about 11 MB as base64 JSON.
    max_body_bytes: int = 16_000_000
    # A body over the limit is still read (and dropped) up to this, so that clients which send the whole body
    # before they read (Python's urllib) get the 413 and its sentence; a larger one is answered and cut off.
    drain_bytes: int = 64_000_000
    # The request line and the headers together: nginx answers 431 beyond; alone, uvicorn's h11 buffers no more of
    # a head still arriving.
    max_header_bytes: int = 16_384
    # nginx: the request line and headers must arrive within this of the connection opening or of the previous
    # answer (the connection is closed); the whole body within `body_timeout_s` of the headers: 408.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    # An idle keep-alive connection is closed after this.
    keep_alive_s: int = 5
    # Behind nginx (`serve --public`): a client that reads nothing of its answer for this long is dropped; one
    # connection serves at most this many requests (pipelined ones one at a time); per client address, at most
    # this many connections and this rate of POST /predict (twice as many in a burst): 429 beyond.
    send_timeout_s: float = 10.0
    keepalive_requests: int = 100
    per_client_connections: int = 32
    per_client_rate: int = 50
    # Behind nginx: per client address, at most this rate of request bodies of `large_body_bytes` or more (and of
    # chunked ones, whose size nginx cannot know before reading them), four times as many in a burst: 429 beyond,
    # answered to the head before the body is read. A person sends a phone photo now and then; a client looping
    # 10 MB pictures is refused at the front instead of having each body buffered, passed on and read by the service
    # only to be told to wait.
    per_client_large_rate: int = 1
    # A request on a connection beyond this many open ones gets 503 (uvicorn's `limit_concurrency`).
    max_connections: int = 100
    # Pictures are decoded in this many processes, never on the HTTP event loop.
    decoders: int = field(default_factory=lambda: max(2, available_cores()))
    # Pictures over this many pixels may occupy all decoders but one, so that small ones (a drawing, a photo of one
    # digit) always find one; a large picture beyond that share gets 503 at once.
    large_picture_pixels: int = 2_000_000
    # A request body over this many bytes takes its place in that share before it is decoded: JSON, base64 and a
    # picture's chunks cost time in proportion to the bytes (a drawn digit is a few KB, a phone photo a few MB), so a
    # slow picture that is large in bytes never holds the last decoder, even from an address not yet counted below.
    large_body_bytes: int = 1_000_000
    # Decoding time, per client address (the peer's; behind nginx, the address nginx saw, never a client's header):
    # what a picture holds a decoder beyond `client_decode_free_s` counts against its client, and is forgotten at
    # `client_decode_forget` seconds a second. An address with more than `client_decode_heavy_s` counted decodes one
    # picture at a time, and such addresses share, with pictures over `large_picture_pixels`, all decoders but one;
    # beyond that share the answer is 503 with Retry-After at once. So a few addresses looping small pictures that
    # take seconds to decode (a 28x28 PNG with a million empty chunks) cannot hold every decoder, while pictures that
    # take milliseconds (a digit) never count, however many one address sends, and a phone photo or two do not either.
    # A picture counts once decoded: an address's first slow pictures are not yet known to be slow.
    client_decode_free_s: float = 0.25
    client_decode_heavy_s: float = 1.0
    client_decode_forget: float = 0.05
    # A request waits at most this for a free decoder: 503 with Retry-After (`retry_after_s`) beyond.
    decoder_wait_s: float = 0.5
    retry_after_s: int = 1
    # To decode and prepare one picture, and the memory a decoder may add for it: 422 beyond (a decoder that ran
    # out of time is ended and replaced).
    decode_time_s: float = 5.0
    decode_memory_mb: int = 512
    # On SIGTERM or Ctrl-C the server stops accepting and lets requests in flight finish for this long.
    stop_grace_s: float = 2.0


LIMITS = ServiceLimits()
