"""`serve --public`: the real nginx in front of the real `serve`, on 127.0.0.1, against the hostile clients that got
past the in-process server alone: each is answered within nginx's limits while a normal client still gets its digit.

Hostile clients connect from other loopback addresses (127.0.0.2, ...: all of 127/8 is this machine), as they would
come from other hosts, so that the per-client limits fall on them and not on the normal client. Skipped, with the
reason, where nginx is not installed; CI (`.ci/run`) installs it and sets MNIST_DENSE_REQUIRE_NGINX.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from benchmarks.hostile import empty_chunk_png
from benchmarks.serve_process import ServeProcess, free_port
from mnist_dense.commands import main
from mnist_dense.deploy import front
from mnist_dense.deploy.limits import LIMITS
from tests.e2e.deploy.test_http_guard import exchange, parsed


def nginx_or_skip() -> None:
    try:
        front.find_nginx()
    except front.DeployError:
        reason = "no nginx: `apt-get install nginx` (Debian) runs these tests; .ci/run does"
        if os.environ.get("MNIST_DENSE_REQUIRE_NGINX"):  # set by .ci/run: CI must run them
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def pair(trained_checkpoint: Path):
    nginx_or_skip()
    port = free_port()
    with ServeProcess(trained_checkpoint, "--public", f"127.0.0.1:{port}", port=port) as running:
        yield running


def connect(port: int, source: str = "127.0.0.1", timeout: float = 30) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def ask(port: int, request: bytes, source: str = "127.0.0.1") -> tuple[int, dict, dict]:
    """One request on its own connection; the status, headers and JSON body (`{}` for another body)."""
    with connect(port, source) as connection:
        connection.sendall(request)
        received = b""
        while not whole(received) and (chunk := connection.recv(65536)):
            received += chunk
    return answer(received)


def whole(response: bytes) -> bool:
    """The head and Content-Length bytes of body have come (nginx lingers for seconds after a 413 otherwise)."""
    head, found, body = response.partition(b"\r\n\r\n")
    length = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    return bool(found and length) and len(body) >= int(length[0].split(b":")[1])


def answer(response: bytes) -> tuple[int, dict, dict]:
    """test_http_guard's `parsed`, for JSON answers only: /health and the page answer otherwise."""
    status, headers, _ = parsed(response.partition(b"\r\n\r\n")[0])
    body = response.partition(b"\r\n\r\n")[2]
    return status, headers, json.loads(body) if headers.get("content-type") == "application/json" else {}


def predict_request(png: str, headers: bytes = b"") -> bytes:
    body = json.dumps({"image": png}).encode()
    return b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n" + (
        b"%sContent-Length: %d\r\n\r\n%s" % (headers, len(body), body)
    )


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def normal_client_gets_its_digit(port: int, digit_pngs) -> None:
    """What every test checks while its attack goes on: /health and a digit answered, the digit right."""
    assert ask(port, HEALTH)[0] == 200
    png, label = digit_pngs[0]  # a 7 the trained network reads
    status, _, answer = ask(port, predict_request(png))
    assert status == 200 and answer["digit"] == label


def slow_pictures_looped_leave_digits_answered(
    port: int, digit_pngs, sources: list[str], behind_nginx: bool = False
) -> None:
    """Each of `sources` loops a 28x28 PNG of 900,000 empty chunks (14 MB as JSON, seconds to decode), claiming in
    X-Real-IP and X-Forwarded-For to be the normal client; once each has had its first picture answered (from then on
    its pictures are known to be slow), a normal client on 127.0.0.1 asks for digits until a slow picture has been
    decoded meanwhile. Every digit is answered 200, right; a slow picture that held a decoder gets 200 (or 422 past the
    time budget, on a loaded machine), the others an at-once 503 (or nginx's 429)."""
    slow = predict_request(
        base64.b64encode(empty_chunk_png(900_000)).decode(), b"X-Real-IP: 127.0.0.1\r\nX-Forwarded-For: 127.0.0.1\r\n"
    )
    answers: dict[str, list[tuple[int, str]]] = {source: [] for source in sources}
    stop = threading.Event()

    def attack(source: str) -> None:
        while not stop.is_set():
            status, _, body = ask(port, slow, source)
            answers[source].append((status, body.get("detail", "")))

    attackers = [threading.Thread(target=attack, args=(source,), daemon=True) for source in sources]
    for thread in attackers:
        thread.start()
    digits: list[tuple[int, int | None, int]] = []
    try:
        deadline = time.monotonic() + 120  # a net against a hang, not a measure: each round takes seconds
        while not all(answers.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        decoded_before = decoded(answers)
        while time.monotonic() < deadline and (len(digits) < 20 or decoded(answers) == decoded_before):
            png, label = digit_pngs[0]  # a 7 the trained network reads
            status, _, answer = ask(port, predict_request(png))
            digits.append((status, answer.get("digit"), label))
            time.sleep(1 / LIMITS.per_client_rate)  # an ordinary client keeps within its rate (nginx: 429 beyond)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(60)
    assert time.monotonic() < deadline, f"no slow picture was decoded while digits were asked: {answers}"
    assert [(status, digit) for status, digit, _ in digits] == [(200, label) for _, _, label in digits]
    assert {status for each in answers.values() for status, _ in each} <= {200, 422, 429, 503}
    share = "pictures from your address took"  # the decoders' share; behind nginx, the large bodies' rate may be first
    assert any((status == 503 and detail.startswith(share)) or (status == 429 and behind_nginx)
               for each in answers.values() for status, detail in each)  # fmt: skip


def decoded(answers: dict[str, list[tuple[int, str]]]) -> int:
    """Slow pictures that held a decoder to their end: decoded (200) or stopped at the time budget (422)."""
    return sum(status in (200, 422) for each in answers.values() for status, _ in each)


def nginx_memory_mb(server: ServeProcess) -> float:
    """Resident memory of nginx's processes (master and worker) together."""
    total_kb = 0
    for pid in server.processes():
        status = Path(f"/proc/{pid}/status")
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "nginx":
                total_kb += next(int(line.split()[1]) for line in status.read_text().splitlines() if "VmRSS" in line)
        except OSError:
            continue
    return total_kb / 1024


def test_one_command_serves_the_page_and_the_digits_through_nginx(pair: ServeProcess, digit_pngs) -> None:
    assert f"behind nginx on {pair.url}" in pair.output()
    status, headers, _ = ask(pair.port, HEALTH)
    assert status == 200 and headers["server"] == "nginx"  # nginx answers, without its version
    with connect(pair.port) as connection:
        connection.sendall(b"GET /draw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        page = b""
        while chunk := connection.recv(65536):
            page += chunk
    assert page.startswith(b"HTTP/1.1 200 ") and b"<canvas" in page
    normal_client_gets_its_digit(pair.port, digit_pngs)
    pair.wait_for_output('"POST /predict" 200 ', timeout=10)  # nginx's access log, on serve's stderr


def test_an_endless_chunked_trailer_is_read_and_dropped_never_reaching_the_service(
    pair: ServeProcess, digit_pngs
) -> None:
    """Alone, a trailer of 16 MB grew the HTTP process by 400 MB and held its event loop for seconds."""
    before = nginx_memory_mb(pair)
    with connect(pair.port, "127.0.0.2") as attacker:
        attacker.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-T: "
        )
        for megabytes in range(1, 21):
            attacker.sendall(b"a" * 1_000_000)
            if megabytes % 10 == 0:
                normal_client_gets_its_digit(pair.port, digit_pngs)
        assert nginx_memory_mb(pair) < before + 20  # 20 MB sent; nginx keeps none of it


def test_a_pipelining_flood_gets_a_bounded_number_of_answers_then_the_connection_is_closed(
    pair: ServeProcess, digit_pngs
) -> None:
    """Alone, 795,000 pipelined requests were queued in 10 s and the HTTP process grew to 1.7 GB."""
    with connect(pair.port, "127.0.0.3") as attacker:
        attacker.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 20_000)  # 660 KB of requests
        normal_client_gets_its_digit(pair.port, digit_pngs)
        received = b""
        while chunk := attacker.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 ") == LIMITS.keepalive_requests  # then nginx closed the connection


def test_clients_that_never_read_and_idle_sockets_leave_everyone_else_served(pair: ServeProcess, digit_pngs) -> None:
    """Alone, 21 never-reading sockets (with the cap at 20) or 110 idle ones locked every other client out."""
    never_reading, idle = [], []
    try:
        for i in range(30):  # each asks for the page 200 times over and reads nothing
            attacker = connect(pair.port, f"127.0.1.{i + 1}")
            attacker.sendall(b"GET /draw HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
            never_reading.append(attacker)
        idle = [connect(pair.port, f"127.0.2.{i % 200 + 1}") for i in range(2 * LIMITS.max_connections)]
        time.sleep(0.5)
        normal_client_gets_its_digit(pair.port, digit_pngs)
    finally:
        for connection in never_reading + idle:
            connection.close()


def test_trickling_headers_and_silent_sockets_are_closed_after_the_header_timeout(pair: ServeProcess) -> None:
    """nginx's `client_header_timeout`; the service alone has no timer before a request's head is complete."""
    trickle = (pair.port, b"GET /health HTTP/1.1\r\n", b"Host: x\r\n")  # and the head never ends
    silent = (pair.port,)
    wait = 3 * LIMITS.header_timeout_s
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda parts: exchange(*parts, pause=0.5, wait=wait), [trickle, silent]))
    assert answers == [(b"", True), (b"", True)]  # closed by nginx, without an answer, long before the client's wait


def test_large_bodies_at_once_go_to_nginx_temporary_files_not_memory(pair: ServeProcess, digit_pngs) -> None:
    """Alone, 60 concurrent 16 MB bodies took the HTTP process from 479 MB to 2.8 GB."""
    size = LIMITS.max_body_bytes - 1000
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % size
    before, peak = nginx_memory_mb(pair), [0.0]

    def send(i: int) -> int:
        with connect(pair.port, f"127.0.3.{i + 1}", timeout=60) as attacker:
            attacker.sendall(head)
            for _ in range(size // 1_000_000):
                attacker.sendall(b" " * 1_000_000)
                peak[0] = max(peak[0], nginx_memory_mb(pair))
            attacker.sendall(b" " * (size % 1_000_000))
            return answer(attacker.recv(65536))[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(send, range(8)))
        normal_client_gets_its_digit(pair.port, digit_pngs)
    # Each read whole by nginx, then answered by the service: not JSON, or 503 while its decoders parse the others.
    assert set(statuses) <= {400, 503} and 400 in statuses
    assert peak[0] < before + 30  # 128 MB of bodies in flight


def test_a_client_over_its_rate_gets_429_with_retry_after_and_the_others_do_not(pair: ServeProcess, digit_pngs) -> None:
    """Per client address: POST /predict beyond its rate and burst gets 429; another address is served."""
    refusal = b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\n{"
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: ask(pair.port, refusal, "127.0.4.1"), range(4 * LIMITS.per_client_rate)))
    limited = [(headers, body) for status, headers, body in answers if status == 429]
    assert limited and all(status in (400, 429) for status, _, _ in answers)
    headers, body = limited[0]
    assert headers["retry-after"] == str(LIMITS.retry_after_s) and "from your address" in body["detail"]
    normal_client_gets_its_digit(pair.port, digit_pngs)


def test_large_bodies_beyond_their_rate_get_429_from_the_head_alone(pair: ServeProcess, digit_pngs) -> None:
    """Per client address, bodies of `large_body_bytes` or more and chunked ones: beyond the large bodies' rate and
    burst, 429 answers the head before any body byte is sent, so a client looping 10 MB pictures costs neither
    nginx's temporary files nor the service's reading of them. The same address's digit is still answered."""
    source, heads = "127.0.4.2", 4 * LIMITS.per_client_large_rate + 6
    large = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % LIMITS.large_body_bytes
    chunked = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    connections = [connect(pair.port, source, timeout=10) for _ in range(heads + 1)]
    try:
        for connection, head in zip(connections, [large] * heads + [chunked], strict=True):
            connection.sendall(head)  # the heads alone, all within a moment: the rate cannot refill between them
        time.sleep(1.0)  # a refusal comes within milliseconds of its head
        answers: list[tuple[int, dict, dict] | None] = []  # None: let in, nginx waits for its body
        for connection in connections:
            connection.setblocking(False)
            try:
                answers.append(answer(connection.recv(65536)))
            except BlockingIOError:
                answers.append(None)
        let_in = answers.count(None)
        assert 0 < let_in <= 4 * LIMITS.per_client_large_rate + 2, answers  # the burst, and what refilled meanwhile
        assert {each[0] for each in answers if each} == {429} and answers[-1], answers  # the chunked one too
        status, headers, body = answers[-1]
        assert headers["retry-after"] == str(LIMITS.retry_after_s) and "from your address" in body["detail"]
        png, label = digit_pngs[0]
        status, _, digit = ask(pair.port, predict_request(png), source)
        assert status == 200 and digit["digit"] == label
    finally:
        for connection in connections:
            connection.close()


def test_addresses_looping_slow_pictures_leave_another_clients_digits_answered(pair: ServeProcess, digit_pngs) -> None:
    """Per client address, as nginx saw it (a client's own X-Real-IP is replaced): nginx's rate of large bodies, and
    the decoders' share by decoding time. Without them, two such addresses held both decoders and about half of
    everyone else's digits got 503."""
    slow_pictures_looped_leave_digits_answered(pair.port, digit_pngs, ["127.0.5.1", "127.0.5.2"], behind_nginx=True)


def test_nginx_answers_its_own_refusals_as_the_service_does(pair: ServeProcess) -> None:
    too_big = b"GET /health HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * (LIMITS.max_header_bytes + 100) + b"\r\n\r\n"
    for request, status, detail in [
        (too_big, 431, f"the request line and headers are over {LIMITS.max_header_bytes:,} bytes"),
        (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 16000001\r\n\r\n",
            413,
            "the body is over 16,000,000",
        ),
    ]:
        answer_status, headers, body = ask(pair.port, request)
        assert answer_status == status and body["detail"].startswith(detail)
        assert (
            headers["x-content-type-options"] == "nosniff"
            and "default-src 'none'" in headers["content-security-policy"]
        )
    assert ask(pair.port, b"NOT HTTP AT ALL\r\n\r\n")[0] == 400  # nginx's own page: an error_page cannot answer it
    pair.wait_for_output('"- -" 400 ', timeout=10)  # a request line that could not be parsed: no method made up


def test_sigterm_ends_nginx_and_serve_and_leaves_nothing(pair: ServeProcess) -> None:
    """The last test of the module: it stops the pair the others used."""
    folders = pair.nginx_prefixes()
    assert len(folders) == 1 and Path(folders[0], "serve.sock").is_socket()
    seconds = pair.stop(signal.SIGTERM)
    assert pair.process.returncode == 0 and pair.processes() == [] and seconds < 10
    assert pair.left_in_temporary() == [] and not Path(folders[0]).exists()  # the prefix, socket, bodies removed
    assert "Traceback" not in pair.output() and pair.output().rstrip().endswith("Server stopped.")


def test_the_configuration_is_valid_nginx_and_carries_the_service_limits(tmp_path: Path) -> None:
    nginx_or_skip()
    limits = dataclasses.replace(
        LIMITS, max_body_bytes=1234, header_timeout_s=7, send_timeout_s=3, large_body_bytes=250_000,
        per_client_large_rate=3,
    )  # fmt: skip
    conf = front.nginx_conf(tmp_path, "::", 8080, "off", limits)
    (tmp_path / "nginx.conf").write_text(conf)
    checked = subprocess.run([front.find_nginx(), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    for directive in ("client_max_body_size 1234;", "client_header_timeout 7s;", "send_timeout 3s;", "[::]:8080;",
                      '"~^:[1-9][0-9]{5,}$"', "rate=3r/s;", "zone=large_rate burst=12 nodelay;"):  # fmt: skip
        assert directive in conf


def test_without_nginx_public_names_the_fix(
    trained_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--ckpt_path", str(trained_checkpoint), "--public", "127.0.0.1:8080"])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("error: --public puts nginx in front") and "apt-get install nginx" in error


@pytest.mark.parametrize("value", ["8080", "localhost:8080", "127.0.0.1:0", "127.0.0.1:http"])
def test_a_public_address_that_is_not_host_port_is_refused(
    trained_checkpoint: Path, capsys: pytest.CaptureFixture, value: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--ckpt_path", str(trained_checkpoint), "--public", value])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith(f"error: --public {value}: give the address and port nginx listens on")


def test_a_port_in_use_is_refused_with_nginx_reason(trained_checkpoint: Path) -> None:
    nginx_or_skip()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ServeProcess(trained_checkpoint, "--public", f"127.0.0.1:{port}", port=free_port())
        try:
            assert server.process.wait(60) == 1
            assert "Address already in use" in server.output() and "error: nginx did not start" in server.output()
            assert server.processes() == [] and server.left_in_temporary() == []
        finally:
            server.close()
