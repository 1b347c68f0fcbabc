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

from mnist_dense.checkpoints import CheckpointError, read_checkpoint
from mnist_dense.deploy.inference import DeployError, checkpoint_path, fail, require_extra

SERVE_MODULES = ("litserve", "fastapi", "pydantic")
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # the hosts LitServe's run() accepts
# Dynamic batching on by default, as LitServe offers it; for this tiny network on 2 cores it is within noise of
# batching off (`make bench-serve ARGS="--rounds 3"`, figures in the README). Its cost: LitServe's batching loop
# polls its queue every millisecond, 17% of a core while idle; `--max_batch_size 1` avoids that.
DEFAULT_BATCH = 16


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mnist_dense serve", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True, help="A checkpoint of `fit`, or `last` (newest under runs/).")
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (this machine only), 0.0.0.0 or :: (all).")
    parser.add_argument("--port", type=int, default=8000, help="Port to listen on (1024-65535).")
    parser.add_argument(
        "--max_batch_size",
        type=int,
        default=DEFAULT_BATCH,
        help="Most requests LitServe batches for the model (default 16; 1 turns dynamic batching off).",
    )
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
    banner = (
        f"Serving {ckpt_path} with LitServe ({batching}) on {url}\n"
        f"  POST {url}/predict  {REQUEST_EXAMPLE}    GET {url}/health\n"
        f"  Draw a digit: {url}{PAGE_URL}    (Ctrl-C or SIGTERM stops the server)"
    )
    run_until_stopped(server, options.host, options.port, banner)


def run_until_stopped(server, host: str, port: int, banner: str) -> None:
    """Run until Ctrl-C or SIGTERM, then make sure every process the server started has ended.

    A signal during start-up, before LitServe's own handling is in place, or a shutdown of LitServe's that
    is cut short, is covered by stopping the child processes that are still alive.
    """
    signals = StopSignals()
    try:
        signals.install()
        print(banner, flush=True)  # from here on, Ctrl-C and SIGTERM stop everything this process starts
        server.run(host=host, port=port, generate_client_file=False, log_level="warning")
    except KeyboardInterrupt:
        pass
    finally:
        signals.done.set()
        for child in multiprocessing.active_children():
            child.terminate()
        for child in multiprocessing.active_children():
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
    print("Server stopped.", flush=True)


class StopSignals:
    """Ctrl-C and SIGTERM become a KeyboardInterrupt in the main thread, repeated until the main thread is done.

    LitServe shuts its workers down on KeyboardInterrupt only, and SIGTERM's default action would end this
    process alone, leaving them running. Two traps, both seen here: the kernel may hand the signal to another
    thread, and Python runs handlers only when the main thread runs Python code, while LitServe's main thread
    waits in a blocking read (SIGTERM then changed nothing); and a KeyboardInterrupt raised inside an at-fork
    callback during start-up is printed and dropped. So the signal module's wakeup fd tells a small thread of
    the first signal, whichever thread got it, and that thread interrupts the main thread until it is done.
    Forked children (uvicorn, LitServe's queue manager) get the previous handlers back.
    """

    RETRY_S = 3.0  # LitServe's own shutdown takes about 2 s; an interrupt that is still needed after that is sent again

    def __init__(self) -> None:
        self.done, self.raised = threading.Event(), threading.Event()

    def handler(self, signum: int, frame: object) -> None:
        if not self.done.is_set():
            self.raised.set()
            raise KeyboardInterrupt

    def install(self) -> None:
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        for signum, handler in previous.items():
            if handler is not signal.SIG_IGN:  # a shell's background job keeps ignoring Ctrl-C
                signal.signal(signum, self.handler)
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

        def restore_in_child() -> None:
            signal.set_wakeup_fd(-1)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        os.register_at_fork(after_in_child=restore_in_child)
        threading.Thread(target=self.interrupt_main_thread, args=(reader, writer), daemon=True).start()

    def interrupt_main_thread(self, reader: socket.socket, writer: socket.socket) -> None:  # holds both ends open
        signum = reader.recv(1)[0]  # the first stop signal
        main = threading.main_thread().ident
        if not self.done.wait(0.2) and not self.raised.is_set():  # the main thread did not get it itself
            signal.pthread_kill(main, signum)
        while not self.done.wait(self.RETRY_S):
            signal.pthread_kill(main, signum)
