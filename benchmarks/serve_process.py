"""`python -m mnist_dense serve` as a subprocess, started as a user starts it: for the load script and the tests.

The server runs in its own session (like a terminal's job), so every process it starts can be found
afterwards: the check that SIGTERM or Ctrl-C left nothing behind. It starts with Ctrl-C's default action, as a
terminal's foreground job does, whoever started this process: a shell's background job (`make test &`, `nohup ...
&`) ignores SIGINT, its children inherit that, and `serve` keeps ignoring a Ctrl-C it was started ignoring.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START_TIMEOUT_S = 120


def connect(port: int, source: str) -> http.client.HTTPConnection:
    """A keep-alive connection to the server on 127.0.0.1 from `source`, a loopback address of its own."""
    return http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def default_interrupt() -> None:
    """In the child, before `serve` starts: SIGINT's default action, as in a terminal's foreground job."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ServeProcess:
    """A running server: `with ServeProcess(ckpt) as server: ...`; anything left at the end is killed."""

    def __init__(self, ckpt: Path | list[Path], *flags: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._folder = tempfile.TemporaryDirectory(prefix="serve-")  # empty: no data, nothing to read
        self.folder = Path(self._folder.name) / "cwd"
        self.temporary = Path(self._folder.name) / "tmp"  # the server's TMPDIR: what it leaves there can be seen
        self.folder.mkdir()
        self.temporary.mkdir()
        self.log = Path(self._folder.name) / "server.log"
        ckpts = [str(Path(path).resolve()) for path in (ckpt if isinstance(ckpt, list) else [ckpt])]
        command = [sys.executable, "-m", "mnist_dense", "serve", "--ckpt_path", *ckpts]
        command += ["--port", str(self.port), *flags]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "TMPDIR": str(self.temporary)}, preexec_fn=default_interrupt,
            )  # fmt: skip

    def __enter__(self) -> ServeProcess:
        try:
            self.wait_until_healthy()
        except BaseException:  # `with` calls no __exit__ when __enter__ fails: a server that never got healthy
            self.close()  # would be left running
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill whatever is left of the server's session and remove its folder."""
        if self.process.poll() is None or self.processes():
            folders = self.nginx_prefixes()  # killed, nginx leaves them
            with contextlib.suppress(ProcessLookupError):  # the whole session is gone already
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
        self._folder.cleanup()

    def output(self) -> str:
        return self.log.read_text()

    def left_in_temporary(self) -> list[str]:
        """What the server left in its TMPDIR, but torch's compile cache (torchinductor_<user>, made by importing
        torch._dynamo, as every command of this package does, and kept on purpose)."""
        return sorted(p.name for p in self.temporary.iterdir() if not p.name.startswith("torchinductor_"))

    def wait_for_output(self, text: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve never printed {text!r}:\n{self.output()}")
            time.sleep(0.05)

    def wait_until_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with status {self.process.returncode}:\n{self.output()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"serve did not answer GET /health within {timeout} s:\n{self.output()}")

    def processes(self) -> list[int]:
        """Live (not zombie) processes of the server's session: the server and everything it started."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[3]) == self.process.pid:
                found.append(int(entry))
        return found

    def nginx_prefixes(self) -> list[str]:
        """`--public`: nginx's prefix folders, from the `-p` of its master process (as root they are in /tmp, outside
        TMPDIR)."""
        found = []
        for pid in self.processes():
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
                if command[:3] == [b"nginx:", b"master", b"process"]:  # the title nginx gives its master process
                    found.append(command[command.index(b"-p") + 1].decode())
        return found

    def memory_mb(self) -> float:
        """Proportional set size of its processes together: pages they share (torch's libraries) counted once."""
        total_kb = 0
        for pid in self.processes():
            try:
                lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            except OSError:
                continue
            total_kb += sum(int(line.split()[1]) for line in lines if line.startswith("Pss:"))
        return total_kb / 1024

    def stop(self, signum: int = signal.SIGTERM, *, whole_group: bool = False, timeout: float = 30) -> float:
        """Send the signal (to the group, as a terminal's Ctrl-C does), wait for every process; returns seconds."""
        start = time.perf_counter()
        if whole_group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        self.process.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        return time.perf_counter() - start
