"""The HTTP limits of `serve` alone against a real uvicorn on 127.0.0.1, with small limits so that each case takes a
second.

The server is uvicorn with `serve`'s options (`uvicorn_options`) in a thread, serving a small FastAPI app behind
`RequestGuard`: the same layers as `serve`, without a model. Clients are raw sockets (to send what no library
sends), Python's urllib and httpx. What nginx answers in front of `serve --public` (head timeouts, the head size in
the service's words, per-client limits) is in test_public.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from benchmarks.serve_process import free_port
from mnist_dense.deploy.digit_api import uvicorn_options
from mnist_dense.deploy.http_guard import ACCESS_LOG, RequestGuard
from mnist_dense.deploy.limits import ServiceLimits

LIMITS = ServiceLimits(max_body_bytes=10_000, drain_bytes=100_000, max_header_bytes=2048,
                       header_timeout_s=0.5, body_timeout_s=0.5, keep_alive_s=1, max_connections=4)  # fmt: skip

SLOW_S = 0.3  # how long GET /slow takes to answer


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def server():
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"received": len(await request.body())})

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse("ok")

    @app.get("/slow")
    async def slow() -> JSONResponse:
        await asyncio.sleep(SLOW_S)
        return JSONResponse("slow")

    app.add_middleware(RequestGuard, limits=LIMITS)
    port = free_port()
    options = uvicorn_options(LIMITS)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off", **options)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    running.should_exit = True
    thread.join(10)


@pytest.fixture
def log():
    lines = Lines()
    ACCESS_LOG.addHandler(lines)
    ACCESS_LOG.setLevel(logging.INFO)
    yield lines.lines
    ACCESS_LOG.removeHandler(lines)


def exchange(port: int, *parts: bytes, pause: float = 0.0, wait: float = 10.0) -> tuple[bytes, bool]:
    """Send the parts (pausing between them), read until the server closes or `wait` passes.

    Returns what came back and whether the server closed the connection (rather than the client giving up).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        for part in parts:
            connection.sendall(part)
            time.sleep(pause)
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            return received, False
        return received, True


def parsed(response: bytes) -> tuple[int, dict, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body) if body else {}


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_a_head_that_grows_over_the_size_limit_is_refused_and_the_connection_closed(server: int, log) -> None:
    """uvicorn's h11 protocol buffers no more of an incomplete head than `h11_max_incomplete_event_size`: its own
    400. (A whole head that comes in one read is parsed; nginx in front bounds every head, test_public.py.)"""
    growing = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2100
    response, closed = exchange(server, growing, b"a" * 2100 + b"\r\n\r\n", pause=0.2)
    assert status_of(response) == 400 and closed
    assert log == []  # refused before a request reached the application (uvicorn logs a warning)


def test_a_body_that_stops_arriving_gets_408(server: int) -> None:
    response, _ = exchange(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    status, _, body = parsed(response)
    assert status == 408 and body["detail"] == "the body did not arrive within 0.5 s"


def test_the_body_limit_is_exact(server: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{server}") as client:
        assert client.post("/echo", content=b"x" * 10_000).json() == {"received": 10_000}
        over = client.post("/echo", content=b"x" * 10_001)
        assert over.status_code == 413 and over.json()["detail"].startswith("the body is over 10,000 bytes; send a")
        assert client.post("/echo", content=b"x").json() == {"received": 1}  # the connection was kept: body read


def test_a_body_over_the_limit_gets_the_413_sentence_through_urllib(server: int) -> None:
    """urllib sends the whole body before it reads: the server reads it to the end before answering."""
    request = urllib.request.Request(f"http://127.0.0.1:{server}/echo", data=b"x" * 90_000, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["detail"].startswith("the body is over 10,000 bytes")


def test_a_body_over_the_limit_gets_the_413_through_httpx_streamed_in_chunks(server: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{server}") as client:
        over = client.post("/echo", content=iter([b"x" * 9_000] * 8))  # no Content-Length: chunked
        assert over.status_code == 413 and "over 10,000 bytes" in over.json()["detail"]


def test_expect_100_continue_gets_the_413_before_sending_the_body(server: int) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 90000\r\nExpect: 100-continue\r\n\r\n"
    status, headers, body = parsed(exchange(server, head)[0])  # the body is never sent
    assert status == 413 and headers["connection"] == "close" and "over 10,000 bytes" in body["detail"]


def test_a_body_beyond_the_drain_bound_is_answered_and_cut_off(server: int) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n"
    status, headers, _ = parsed(exchange(server, head)[0])
    assert status == 413 and headers["connection"] == "close"


def test_connections_beyond_the_limit_get_503(server: int) -> None:
    """uvicorn's `limit_concurrency`; behind nginx, connections are limited per client address (test_public.py)."""
    idle = [socket.create_connection(("127.0.0.1", server)) for _ in range(4)]
    try:
        time.sleep(0.1)
        assert status_of(exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")[0]) == 503
    finally:
        for connection in idle:
            connection.close()
    time.sleep(0.1)
    assert parsed(exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0])[0] == 200


def test_a_keep_alive_connection_serves_several_requests_then_is_closed_when_idle(server: int) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    response, closed_by_server = exchange(server, request, request, pause=0.2)
    assert response.count(b"HTTP/1.1 200 OK") == 2 and closed_by_server  # the client would have waited 10 s


def test_a_request_that_is_not_http_gets_400_and_no_access_log_line(server: int, log) -> None:
    response, closed = exchange(server, b"NOT HTTP AT ALL\r\n\r\n")
    assert status_of(response) == 400 and closed and log == []  # not a request: nothing to log as one


def test_every_answer_says_nosniff_and_has_a_content_security_policy(server: int) -> None:
    answers = [
        exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0],
        exchange(server, b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0],
        exchange(server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\nExpect: 100-continue\r\n\r\n")[0],
    ]
    assert [parsed(answer)[0] for answer in answers] == [200, 404, 413]
    for answer in answers:
        headers = parsed(answer)[1]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert "server" not in headers


def test_the_access_log_has_one_line_per_request_and_never_the_body(server: int, log) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{server}") as client:
        client.post("/echo", content=b"SECRET-PICTURE" * 10)
        client.post("/echo", content=b"x" * 20_000)
        client.get("/health%0Aforged 200 line")
    assert len(log) == 3
    fields = log[0].split()
    assert fields[0].endswith("Z") and fields[1].startswith("127.0.0.1:")
    assert log[0].split(" ", 2)[2].startswith('"POST /echo" 200 ') and log[0].endswith("in=140 out=16")
    assert '"POST /echo" 413 ' in log[1] and "in=20000" in log[1]
    assert '"GET /health\\x0aforged\\x20200\\x20line" 404 ' in log[2]  # no forged line: control characters escaped
    assert not any("SECRET" in line for line in log)


def test_the_access_log_gives_each_requests_duration_in_milliseconds(server: int, log) -> None:
    started = time.perf_counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{server}") as client:
        assert client.get("/slow").status_code == 200
    elapsed_ms = 1000 * (time.perf_counter() - started)
    (line,) = log
    logged_ms = float(re.search(r'"GET /slow" 200 ([0-9.]+)ms ', line).group(1))
    assert 1000 * SLOW_S <= logged_ms <= elapsed_ms  # at least the handler's sleep, at most what the client waited
