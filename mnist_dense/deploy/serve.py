"""`python -m mnist_dense serve --ckpt_path CKPT`: the network behind HTTP on LitServe, and a page to draw digits.

`POST /predict` takes `{"image": "<base64 PNG/JPEG/GIF/WebP/BMP, or a data: URL>"}` and answers the digit,
its probability, the ten probabilities and the 28x28 picture the network saw; `GET /health` answers 200
once the model is loaded; `/draw` is the page. LitServe batches concurrent requests for the model.
It needs only the checkpoint: no MNIST files, any working folder, nothing written.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable

from mnist_dense.checkpoints import CheckpointError, read_checkpoint
from mnist_dense.deploy.inference import DeployError, checkpoint_path, fail, require_extra

SERVE_MODULES = ("litserve", "fastapi", "pydantic")
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # the hosts LitServe's run() accepts


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mnist_dense serve", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True, help="A checkpoint of `fit`, or `last` (newest under runs/).")
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (this machine only), 0.0.0.0 or :: (all).")
    parser.add_argument("--port", type=int, default=8000, help="Port to listen on (1024-65535).")
    parser.add_argument("--max_batch_size", type=int, default=16, help="Requests batched together; 1 turns it off.")
    parser.add_argument("--batch_timeout", type=float, default=0.005, help="Seconds a batch waits to fill.")
    return parser.parse_args(args)


def check_options(options: argparse.Namespace) -> None:
    if options.host not in HOSTS:
        raise DeployError(
            f"--host {options.host}: LitServe listens on 127.0.0.1 (this machine only, the default), 0.0.0.0"
            " (every IPv4 interface) or :: (every IPv6 interface); use one of those."
        )
    if not 1024 <= options.port <= 65535:
        raise DeployError(f"--port {options.port}: use a port from 1024 to 65535, for example the default 8000.")
    if options.max_batch_size < 1 or options.batch_timeout < 0:
        raise DeployError("--max_batch_size must be at least 1 and --batch_timeout at least 0 seconds.")


def main(args: list[str]) -> None:
    options = parse_args(args)
    try:
        require_extra("serve", SERVE_MODULES)
        check_options(options)
        ckpt_path = checkpoint_path(options.ckpt_path)
        read_checkpoint(ckpt_path)  # a bad checkpoint stops here, before any process starts
    except (CheckpointError, DeployError) as err:
        fail(err)
    from mnist_dense.deploy.digit_api import PAGE_URL, REQUEST_EXAMPLE, build_server

    server = build_server(ckpt_path, options.max_batch_size, options.batch_timeout)
    shown = "127.0.0.1" if options.host == "0.0.0.0" else "[::1]" if options.host == "::" else options.host
    url = f"http://{shown}:{options.port}"
    batching = "no batching"
    if options.max_batch_size > 1:
        batching = f"batches of up to {options.max_batch_size} requests, {1000 * options.batch_timeout:g} ms to fill"
    print(f"Serving {ckpt_path} with LitServe ({batching}) on {url}", flush=True)
    print(f"  POST {url}/predict  {REQUEST_EXAMPLE}    GET {url}/health", flush=True)
    print(f"  Draw a digit: {url}{PAGE_URL}    (Ctrl-C or SIGTERM stops the server)", flush=True)
    run_until_stopped(server, options.host, options.port)


def run_until_stopped(server, host: str, port: int) -> None:
    """Run until Ctrl-C or SIGTERM, then make sure every process the server started has ended.

    LitServe shuts its workers down on KeyboardInterrupt only; SIGTERM would end this process alone and leave
    them running, so both signals raise KeyboardInterrupt (once). A signal during start-up, before LitServe's
    own handling is in place, is covered by stopping the child processes that are still alive.
    """
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            raise KeyboardInterrupt

    handle_stop_signals(stop)
    try:
        server.run(host=host, port=port, generate_client_file=False, log_level="warning")
    except KeyboardInterrupt:
        pass
    finally:
        stopping.set()
        for child in multiprocessing.active_children():
            child.terminate()
        for child in multiprocessing.active_children():
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
    print("Server stopped.", flush=True)


def handle_stop_signals(stop: Callable[[int, object], None]) -> None:
    """Call `stop` in the main thread for SIGINT and SIGTERM, whichever thread the kernel hands them to.

    Python runs a handler only when the main thread runs Python code, and LitServe's main thread waits in a
    blocking read that only a signal of its own interrupts (observed: SIGTERM changed nothing for minutes).
    The signal module's wakeup fd tells a small thread about every signal, and that thread re-sends each kind
    once to the main thread. Forked children (uvicorn, LitServe's queue manager) get the old handlers back.
    """
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:  # a shell's background job keeps ignoring Ctrl-C
            signal.signal(signum, stop)
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def restore_in_child() -> None:
        signal.set_wakeup_fd(-1)
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    os.register_at_fork(after_in_child=restore_in_child)
    main = threading.main_thread().ident

    def forward(reader: socket.socket, writer: socket.socket) -> None:  # holds both ends open for good
        forwarded: set[int] = set()
        while data := reader.recv(64):
            for signum in set(data) - forwarded:
                forwarded.add(signum)
                signal.pthread_kill(main, signum)

    threading.Thread(target=forward, args=(reader, writer), name="stop-signals-to-main", daemon=True).start()
