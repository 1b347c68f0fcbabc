"""`python -m mnist_dense serve --ckpt_path CKPT`: the network behind HTTP on LitServe, and a page to draw digits.

`POST /predict` takes `{"image": "<base64 PNG/JPEG/GIF/WebP/BMP, or a data: URL>"}` and answers the digit,
its probability, the ten probabilities and the 28x28 picture the network saw; `GET /health` answers 200
once the model is loaded; `/draw` is the page. LitServe batches concurrent requests for the model.
It needs only the checkpoint: no MNIST files, any working folder, nothing written but the access log.
"""

from __future__ import annotations

import argparse
import gc
import logging
import logging.handlers
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import socket
import sys
import threading
from pathlib import Path

from mnist_dense.checkpoints import CheckpointError, read_checkpoint
from mnist_dense.deploy.front import Front, parse_public
from mnist_dense.deploy.inference import DeployError, checkpoint_path, fail, require_extra
from mnist_dense.deploy.limits import LIMITS
from mnist_dense.deploy.options import command_parser, parse_flat
from mnist_dense.stopping import handled

SERVE_MODULES = ("litserve", "fastapi", "pydantic")
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # the hosts LitServe's run() accepts
# Dynamic batching on by default, as LitServe offers it; for this tiny network on 2 cores it is within noise of
# batching off (`make bench-serve ARGS="--rounds 3"`, figures in the README). Its cost: LitServe's batching loop
# polls its queue every millisecond, 17% of a core while idle; `--max_batch_size 1` avoids that.
DEFAULT_BATCH = 16


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = command_parser("python -m mnist_dense serve", __doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt_path",
        required=True,
        nargs="+",
        help="A checkpoint of `fit`, or `last` (newest under runs/); several are answered side by side.",
    )
    parser.add_argument(
        "--names",
        nargs="+",
        help="A name for each checkpoint, in the same order (letters, digits, '.', '_', '-'), e.g. --names dense conv;"
        " default: the checkpoints' file names.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (this machine only), 0.0.0.0 or :: (all).")
    parser.add_argument("--port", type=int, default=8000, help="Port to listen on (1024-65535).")
    parser.add_argument(
        "--max_batch_size",
        type=int,
        default=DEFAULT_BATCH,
        help="Most requests LitServe batches for the model (default 16; 1 turns dynamic batching off).",
    )
    parser.add_argument("--batch_timeout", type=float, default=0.005, help="Seconds a batch waits to fill.")
    parser.add_argument(
        "--public",
        metavar="HOST:PORT",
        help="Face the internet: nginx (installed separately) listens on HOST:PORT, e.g. 0.0.0.0:8080, with limits"
        " from the service's own, in front of the service on a Unix socket; this command starts and stops both.",
    )
    parser.add_argument(
        "--access_log",
        default="stderr",
        help="One line per request: stderr (the default), a file to append to (reopened when rotated), or off.",
    )
    return parse_flat(parser, args)


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


def network_names(names: list[str] | None, ckpt_paths: list[Path]) -> list[str]:
    """`--names`, or the checkpoints' file names: one distinct, short, plain name for each checkpoint."""
    given = names or [path.stem for path in ckpt_paths]
    flag = "--names" if names else "the checkpoints' file names"
    if len(given) != len(ckpt_paths):
        raise DeployError(
            f"--names gives {len(given)} names for {len(ckpt_paths)} checkpoints; give one name for each, in the"
            " order of --ckpt_path."
        )
    if len(set(given)) != len(given):
        raise DeployError(f"{flag} repeat a name ({' '.join(given)}): name each network, e.g. --names dense conv.")
    for name in given:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", name):
            raise DeployError(
                f"{flag}: {name!r} is not a plain name; use up to 32 letters, digits, '.', '_' or '-', e.g. dense."
            )
    return given


def main(args: list[str]) -> None:
    options = parse_args(args)
    try:
        require_extra("serve", SERVE_MODULES)
        check_options(options)
        ckpt_paths = [checkpoint_path(value) for value in options.ckpt_path]
        for ckpt_path in ckpt_paths:
            read_checkpoint(ckpt_path)  # a bad checkpoint stops here, before any process starts
        names = network_names(options.names, ckpt_paths) if len(ckpt_paths) > 1 or options.names else None
        front = public_front(options.public, options.access_log) if options.public else None
        start_access_log("off" if front else options.access_log)  # behind nginx, nginx's log is the access log
    except (CheckpointError, DeployError) as err:
        fail(err)
    from mnist_dense.deploy.decoding import REQUEST_EXAMPLE
    from mnist_dense.deploy.digit_api import PAGE_URL, build_server, uvicorn_options

    server = build_server(ckpt_paths, names, options.max_batch_size, options.batch_timeout, behind_nginx=bool(front))
    shown = "127.0.0.1" if options.host == "0.0.0.0" else "[::1]" if options.host == "::" else options.host
    url = front.url if front else f"http://{shown}:{options.port}"
    batching = "no batching"
    if options.max_batch_size > 1:
        batching = f"batches of up to {options.max_batch_size} requests, {1000 * options.batch_timeout:g} ms to fill"
    served = ", ".join(f"{path} as {name}" for path, name in zip(ckpt_paths, names, strict=True)) if names else ""
    behind = f" behind nginx on {url}" if front else f" on {url}"
    banner = (
        f"Serving {served or ckpt_paths[0]} with LitServe ({batching}){behind}\n"
        f"  POST {url}/predict  {REQUEST_EXAMPLE}    GET {url}/health\n"
        f"  Draw a digit: {url}{PAGE_URL}    (Ctrl-C or SIGTERM stops the server)"
    )
    uvicorn = {**uvicorn_options(behind_nginx=True), "uds": str(front.socket)} if front else uvicorn_options()
    try:
        run_until_stopped(server, options.host, options.port, banner, uvicorn, front)
    except DeployError as err:
        fail(err)
    gc.freeze()  # the process ends now: Python's last collection of torch's and Lightning's objects took seconds


def public_front(public: str, access_log: str) -> Front:
    """nginx for `--public`, configured but not started; or a `DeployError` (nginx missing, a bad HOST:PORT)."""
    host, port = parse_public(public)
    if access_log not in ("stderr", "off") and not os.access(Path(access_log).resolve().parent, os.W_OK):
        raise DeployError(
            f"--access_log {access_log}: nginx cannot append to it; name a file in a folder you can write to, or use"
            " stderr or off."
        )
    return Front(host, port, access_log)


def start_access_log(target: str) -> None:
    """`--access_log`: stderr, a file (appended; reopened when logrotate moves it), or off."""
    from mnist_dense.deploy.http_guard import ACCESS_LOG

    ACCESS_LOG.handlers.clear()
    ACCESS_LOG.setLevel(logging.INFO)
    if target == "off":
        ACCESS_LOG.setLevel(logging.CRITICAL + 1)
        return
    try:
        handler = logging.StreamHandler(sys.stderr)
        if target != "stderr":
            handler = logging.handlers.WatchedFileHandler(target)
    except OSError as err:
        raise DeployError(
            f"--access_log {target}: cannot append to it ({err.strerror or err}); name a file in a folder you can"
            " write to, or use stderr or off."
        ) from None
    ACCESS_LOG.addHandler(handler)


def run_until_stopped(server, host: str, port: int, banner: str, options: dict, front: Front | None = None) -> None:
    """Run until Ctrl-C or SIGTERM, then make sure every process the server started has ended.

    A signal during start-up, before LitServe's own handling is in place, or a shutdown of LitServe's that
    is cut short, is covered by stopping the child processes that are still alive. nginx (`front`) starts first
    (answering 503 until the service listens on its socket) and is asked to quit first, with the same grace.
    """
    signals = StopSignals(LIMITS.stop_grace_s, front)
    logging.getLogger("litserve.server").addFilter(lambda record: not signals.is_litserve_racing_itself(record))
    with handled(signals.handler, keep_ignored=True):  # also while stopping; a background job keeps ignoring Ctrl-C
        try:
            signals.install()
            if front:
                front.start()
            print(banner, flush=True)  # from here on, Ctrl-C and SIGTERM stop everything this process starts
            server.run(host=host, port=port, generate_client_file=False, log_level="warning", **options)
        except KeyboardInterrupt:
            pass
        finally:
            signals.done.set()
            if front:
                front.stop()
            for child in multiprocessing.active_children():
                child.terminate()
            for child in multiprocessing.active_children():
                child.join(timeout=5)
                if child.is_alive():
                    child.kill()
    print("Server stopped.", flush=True)


def exit_cleanly(signum: int, frame: object) -> None:
    """SIGTERM in a forked child (uvicorn re-raises it after its graceful shutdown): exit through Python, so that
    multiprocessing removes the child's temporary folder (pymp-*); SIGTERM's default action would leave it."""
    raise SystemExit(0)


class StopSignals:
    """Ctrl-C and SIGTERM stop the HTTP process gracefully first, then LitServe and everything else.

    The order matters: requests in flight need LitServe's queues and inference worker until they are answered,
    and LitServe's own shutdown ends those first. So the first signal makes a small thread stop the HTTP process
    (uvicorn stops accepting, lets requests in flight finish for `grace_s`, then stops the picture decoders) and
    only then becomes the KeyboardInterrupt in the main thread that LitServe shuts down on. SIGTERM's default action
    would end this process alone, leaving the others running; and the kernel may hand the signal to any thread
    while Python runs handlers only when the main thread runs Python code (LitServe's waits in a blocking read).
    So the signal module's wakeup fd tells the thread of the first signal, whichever thread got it, and the thread
    interrupts the main thread until it is done. Forked children (uvicorn, LitServe's queue manager) ignore Ctrl-C
    outside uvicorn's own handling (which stops the HTTP process gracefully), and exit cleanly on SIGTERM.
    """

    RETRY_S = 3.0  # LitServe's own shutdown takes about 2 s; an interrupt that is still needed after that is sent again
    HTTP_PROCESS_PREFIX = "LitServer"  # LitServe's name for its uvicorn processes

    def __init__(self, grace_s: float, front: Front | None = None) -> None:
        self.grace_s, self.front = grace_s, front
        self.done, self.http_stopped = threading.Event(), threading.Event()

    def handler(self, signum: int, frame: object) -> None:
        if self.http_stopped.is_set() and not self.done.is_set():
            raise KeyboardInterrupt

    def is_litserve_racing_itself(self, record: logging.LogRecord) -> bool:
        """LitServe's messages while it stops that are no news: its HTTP process is "Already not alive" (stopped
        first, here), and its worker monitor, a thread that wakes every 2 s, may find the inference worker its own
        shutdown just ended ("died; shutting down") or the queue manager gone ("Monitoring worker crashed")."""
        message = record.getMessage()
        return self.http_stopped.is_set() and any(
            text in message for text in ("Already not alive", "died; shutting down", "Monitoring worker crashed")
        )

    def install(self) -> None:
        """The wakeup fd and the thread that stops the processes in order (`handler` is the signals' handler)."""
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

        def restore_in_child() -> None:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, exit_cleanly)

        os.register_at_fork(after_in_child=restore_in_child)
        threading.Thread(target=self.stop_in_order, args=(reader, writer), daemon=True).start()

    def stop_in_order(self, reader: socket.socket, writer: socket.socket) -> None:  # holds both ends open
        signum = reader.recv(1)[0]  # the first stop signal
        if self.front:
            self.front.quit()  # nginx stops accepting and finishes its requests while the service does the same
        self.stop_http_processes()
        self.http_stopped.set()
        main = threading.main_thread().ident
        while not self.done.is_set():
            signal.pthread_kill(main, signum)
            self.done.wait(self.RETRY_S)

    def stop_http_processes(self) -> None:
        """SIGTERM to LitServe's uvicorn processes: each finishes its requests within the grace period and exits."""
        http = [p for p in multiprocessing.active_children() if p.name.startswith(self.HTTP_PROCESS_PREFIX)]
        for process in http:
            process.terminate()
        multiprocessing.connection.wait([process.sentinel for process in http], timeout=self.grace_s + 2)
        for process in http:
            if process.is_alive():
                process.kill()
