"""A real `python -m mnist_dense serve`: started in an empty folder with the checkpoint alone, used over HTTP,
then stopped with SIGTERM or Ctrl-C, after which no process of it may be left."""

from __future__ import annotations

import http.client
import json
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from benchmarks.serve_process import ServeProcess
from mnist_dense.cli import main

pytestmark = pytest.mark.slow


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
