"""A real `python -m mnist_dense serve`: started in an empty folder with the checkpoint alone, used over HTTP,
then stopped with SIGTERM or Ctrl-C, after which no process of it may be left."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from benchmarks.hostile import large_png
from benchmarks.serve_process import ServeProcess
from mnist_dense.commands import main
from mnist_dense.deploy.http_guard import ACCESS_LOG
from mnist_dense.deploy.limits import LIMITS
from mnist_dense.deploy.serve import start_access_log
from tests.conftest import REPO
from tests.e2e.deploy.test_public import slow_pictures_looped_leave_digits_answered


def post(port: int, body: bytes) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def listening_addresses(port: int) -> set[str]:
    """Local addresses of listening TCP sockets on `port`, from the kernel's table (hex, as /proc writes them)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.fixture(scope="module")
def server(trained_checkpoint: Path):
    with ServeProcess(trained_checkpoint, "--max_batch_size", "16") as running:  # batching on (also the default)
        yield running


def test_it_starts_in_an_empty_folder_prints_its_urls_and_writes_nothing(server: ServeProcess) -> None:
    output = server.output()
    assert f"Serving {server.process.args[5]} with LitServe" in output
    assert f"Draw a digit: {server.url}/draw" in output and f"POST {server.url}/predict" in output
    assert not list(server.folder.iterdir())  # no MNIST files needed, no client.py written


def test_it_listens_on_127_0_0_1_only(server: ServeProcess) -> None:
    assert listening_addresses(server.port) == {"0100007F"}  # 127.0.0.1, nothing on 0.0.0.0 or ::


def test_concurrent_good_and_bad_requests_each_get_their_own_answer(server: ServeProcess, digit_pngs) -> None:
    """Bad pictures are refused on their own; they never fail the good requests batched with them (LitServe #340)."""
    good = [json.dumps({"image": png}).encode() for png, _ in digit_pngs[:24]]
    alone = [post(server.port, body) for body in good]
    bad = [b"{", b'{"image": "bm90IGEgcGljdHVyZQ=="}', b'{"picture": 1}', b'{"image": "not base64!"}'] * 6
    bodies = [body for pair in zip(good, bad, strict=True) for body in pair]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda body: post(server.port, body), bodies))
    for i, (status, answer) in enumerate(answers):
        if i % 2 == 0:
            expected = alone[i // 2][1]  # the same answer as alone, up to float rounding of another batch size
            assert status == 200 and answer["digit"] == expected["digit"] and answer["prepared"] == expected["prepared"]
            assert answer["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)
        else:
            assert 400 <= status < 500 and isinstance(answer["detail"], str)
    right = sum(answer["digit"] == label for (_, answer), (_, label) in zip(alone, digit_pngs, strict=False))
    assert right >= 18  # real test digits, the 92% network


def test_a_body_over_the_limit_gets_its_413_sentence_through_urllib_httpx_and_curl(
    server: ServeProcess, tmp_path: Path
) -> None:
    """urllib sends the whole body before reading (the server reads it to the end first); curl asks with `Expect:
    100-continue` and gets the 413 before sending; httpx sends and reads as it goes."""
    body = b" " * (LIMITS.max_body_bytes + 1)
    sentence = f"the body is over {LIMITS.max_body_bytes:,} bytes"
    request = urllib.request.Request(f"{server.url}/predict", data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413 and json.loads(refused.value.read())["detail"].startswith(sentence)
    answer = httpx.post(f"{server.url}/predict", content=body, timeout=60)
    assert answer.status_code == 413 and answer.json()["detail"].startswith(sentence)
    if shutil.which("curl"):
        (tmp_path / "body.json").write_bytes(body)
        curl = subprocess.run(["curl", "-s", "-w", "\\n%{http_code}", "--data-binary", f"@{tmp_path / 'body.json'}",
                               "-H", "Content-Type: application/json", f"{server.url}/predict"],
                              capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        text, status = curl.stdout.rsplit("\n", 1)
        assert status == "413" and json.loads(text)["detail"].startswith(sentence)
    assert '/predict" 413 ' in server.output()  # each in the access log


def test_addresses_looping_slow_pictures_leave_other_clients_digits_answered(server: ServeProcess, digit_pngs) -> None:
    """Alone, the client's address is the connection's peer; X-Real-IP and X-Forwarded-For from a client are ignored."""
    slow_pictures_looped_leave_digits_answered(server.port, digit_pngs, ["127.0.6.1", "127.0.6.2"])


def test_a_head_growing_over_the_limit_gets_400(server: ServeProcess) -> None:
    """uvicorn's h11 bound on an incomplete head (`h11_max_incomplete_event_size`); nginx answers 431 in front."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 20_000)
        time.sleep(0.2)
        connection.sendall(b"c" * 20_000 + b"\r\n\r\n")
        assert connection.recv(1024).startswith(b"HTTP/1.1 400 ")


def test_sigterm_while_a_picture_decodes_answers_it_and_leaves_no_process_traceback_or_file(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    """The request in flight gets an answer (its digit, or 503 once the grace period is over), then everything ends
    and the temporary directory holds nothing of the server's."""
    access_log = tmp_path / "access.log"
    body = json.dumps({"image": base64.b64encode(large_png(5000)).decode()}).encode()
    with ServeProcess(trained_checkpoint, "--access_log", str(access_log)) as server:
        answers = []
        sender = threading.Thread(target=lambda: answers.append(post(server.port, body)))
        sender.start()
        time.sleep(0.3)  # the picture is on its way to a decoder (about a second of work)
        server.stop(signal.SIGTERM)
        sender.join(30)
        assert len(answers) == 1 and answers[0][0] in (200, 503)
        assert answers[0][0] == 200 or answers[0][1]["detail"] == "the server is stopping; retry in a moment"
        assert server.process.returncode == 0 and server.processes() == []
        output = server.output()
        assert server.left_in_temporary() == []
    assert "Traceback" not in output and "Error" not in output
    logged = access_log.read_text()
    assert '"POST /predict" ' in logged and '"GET /health" 200 ' in logged
    assert '"GET /health"' not in output  # the log went to the file, not to stderr


def test_access_log_off_writes_nothing_and_a_file_that_cannot_be_written_is_refused(
    trained_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    start_access_log("off")
    assert not ACCESS_LOG.isEnabledFor(logging.INFO) and not ACCESS_LOG.handlers
    start_access_log("stderr")
    assert ACCESS_LOG.isEnabledFor(logging.INFO) and len(ACCESS_LOG.handlers) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--ckpt_path", str(trained_checkpoint), "--access_log", "/nonexistent/folder/access.log"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: --access_log /nonexistent/folder/access.log: cannot append")


@pytest.mark.parametrize(("signum", "whole_group"), [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_sigterm_or_ctrl_c_ends_the_server_and_every_process_it_started(
    trained_checkpoint: Path, digit_pngs, signum: int, whole_group: bool
) -> None:
    """SIGTERM to the main process (as systemd or Docker send it), or SIGINT to the group (Ctrl-C in a terminal)."""
    with ServeProcess(trained_checkpoint) as server:
        assert post(server.port, json.dumps({"image": digit_pngs[0][0]}).encode())[0] == 200
        assert len(server.processes()) >= 3  # the server, LitServe's HTTP process and its inference worker at least
        server.stop(signum, whole_group=whole_group)
        assert server.process.returncode == 0
        assert server.processes() == []
        assert server.output().rstrip().endswith("Server stopped.")


def test_sigterm_while_the_model_is_still_loading_leaves_no_process(trained_checkpoint: Path) -> None:
    server = ServeProcess(trained_checkpoint)
    try:
        server.wait_for_output("Draw a digit")  # printed before LitServe starts its processes and loads the model
        server.stop(signal.SIGTERM)
        assert server.process.returncode == 0 and server.processes() == []
    finally:
        server.close()


def test_a_host_litserve_cannot_listen_on_is_refused(trained_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--ckpt_path", str(trained_checkpoint), "--host", "192.168.1.20"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: --host 192.168.1.20: LitServe listens on 127.0.0.1")


def test_without_the_deploy_extra_serve_says_which_extra_to_install(
    trained_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "litserve", None)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--ckpt_path", str(trained_checkpoint)])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("error: serve needs litserve") and 'pip install -e ".[deploy]"' in error


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ([], "the checkpoints' file names repeat a name (last last): name each network"),
        (["--names", "dense"], "--names gives 1 names for 2 checkpoints"),
        (["--names", "dense", "dense"], "--names repeat a name (dense dense)"),
        (["--names", "dense", "my conv"], "--names: 'my conv' is not a plain name"),
    ],
)
def test_several_checkpoints_need_distinct_plain_names(
    trained_checkpoint: Path,
    trained_conv_checkpoint: Path,
    capsys: pytest.CaptureFixture,
    names: list[str],
    message: str,
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--ckpt_path", str(trained_checkpoint), str(trained_conv_checkpoint), *names])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith(f"error: {message}")


def test_the_corner_sevens_example_asks_every_served_network_as_drawn_and_prepared(
    trained_checkpoint: Path, trained_conv_checkpoint: Path
) -> None:
    """examples/corner_sevens.py, as the README runs it, against `serve` with the dense and the conv network."""
    with ServeProcess([trained_checkpoint, trained_conv_checkpoint], "--names", "dense", "conv") as server:
        done = subprocess.run([sys.executable, "examples/corner_sevens.py", server.url], cwd=REPO,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 12 and all("dense: " in line and "conv: " in line for line in lines)
    middle = next(line for line in lines if line.startswith("middle") and "prepared" in line)
    assert "dense: 7 " in middle  # the seven the page tests draw, prepared as MNIST's digits: the dense net reads it
