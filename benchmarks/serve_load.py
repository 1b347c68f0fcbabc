"""`make bench-serve`: load-test `python -m mnist_dense serve` with real test digits, batching on and off.

For each configuration it starts the server as you would (a subprocess in an empty folder, so it runs with
the checkpoint alone), waits for `GET /health`, sends a short warm-up, then CLIENTS threads, each with its own
keep-alive connection, send REQUESTS `POST /predict` requests between them: the test digits as PNG, in order.
It reports requests per second, p50/p99/max latency, failures (anything but 200 with a digit) and how many
answers were the true label; memory (PSS, shared pages counted once) of the server's processes at the start
and the end; then SIGTERM, and checks that no process of the server is left. The clients run on the same
machine, so on 2 cores they take CPU time from the server: the figures are for the whole machine.
Results: a table in runs/bench/serve-latest.md and the raw figures in runs/bench/serve-<time>.json.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from torchvision.io import encode_png

from benchmarks.serve_process import ServeProcess
from mnist_dense.data import load_split
from mnist_dense.data.files import default_data_dir
from mnist_dense.deploy.inference import checkpoint_path

CONFIGURATIONS = {
    "on": ("dynamic batching on (the default: up to 16 requests, 5 ms to fill)", []),
    "off": ("dynamic batching off (`--max_batch_size 1`)", ["--max_batch_size", "1"]),
}
WARM_UP = 200


@dataclass
class LoadResult:
    configuration: str
    requests: int
    clients: int
    failures: int
    correct: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    memory_start_mb: float
    memory_end_mb: float
    processes: int
    stop_seconds: float
    left_running: int


def parse_args(args: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", default="last", help="Checkpoint to serve (default: newest under runs/).")
    parser.add_argument("--requests", type=int, default=10_000, help="Requests a configuration (test digits).")
    parser.add_argument("--clients", type=int, default=16, help="Concurrent clients.")
    parser.add_argument("--only", default="on,off", help="Configurations to run: on, off or both.")
    parser.add_argument(
        "--rounds", type=int, default=1, help="Rounds, alternating the configurations (on, off, on...)."
    )
    parser.add_argument("--port", type=int, default=None, help="Port for the server (default: a free one).")
    parser.add_argument(
        "--data.data_dir", dest="data_dir", default=default_data_dir(), help="Folder holding MNIST/raw."
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    return parser.parse_args(args)


def request_bodies(data_dir: str, count: int) -> tuple[list[bytes], list[int]]:
    """The first `count` test digits (cycling if more) as JSON bodies holding base64 PNGs, with their labels."""
    images, labels = load_split(data_dir, "test")
    indices = [i % len(labels) for i in range(count)]
    bodies = [
        json.dumps({"image": base64.b64encode(encode_png(images[i][None]).numpy().tobytes()).decode()}).encode()
        for i in indices
    ]
    return bodies, [int(labels[i]) for i in indices]


def send_all(port: int, bodies: list[bytes], labels: list[int], clients: int) -> tuple[list[float], int, int, float]:
    """Clients threads take the next request until none is left; returns latencies (s), failures, correct, wall."""
    next_index, lock = iter(range(len(bodies))), threading.Lock()
    latencies: list[float] = []
    counts = {"failures": 0, "correct": 0}

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/json"}
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            start = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=bodies[i], headers=headers)
                response = connection.getresponse()
                answer = json.loads(response.read())
                ok, correct = response.status == 200 and "digit" in answer, answer.get("digit") == labels[i]
            except (OSError, http.client.HTTPException, ValueError):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                ok = correct = False
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                counts["failures"] += not ok
                counts["correct"] += bool(correct)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, counts["failures"], counts["correct"], time.perf_counter() - start


def run_configuration(name: str, ckpt: Path, options: argparse.Namespace, bodies: list[bytes], labels: list[int]):
    label, flags = CONFIGURATIONS[name]
    with ServeProcess(ckpt, *flags, port=options.port) as server:
        send_all(server.port, bodies[:WARM_UP], labels[:WARM_UP], options.clients)
        processes, memory_start = len(server.processes()), server.memory_mb()
        latencies, failures, correct, seconds = send_all(server.port, bodies, labels, options.clients)
        memory_end = server.memory_mb()
        stop_seconds = server.stop(signal.SIGTERM)
        left_running = len(server.processes())
    milliseconds = sorted(1000 * s for s in latencies)
    return LoadResult(
        configuration=label,
        requests=len(latencies),
        clients=options.clients,
        failures=failures,
        correct=correct,
        seconds=round(seconds, 2),
        requests_per_second=round(len(latencies) / seconds, 1),
        p50_ms=round(statistics.median(milliseconds), 1),
        p99_ms=round(milliseconds[int(0.99 * (len(milliseconds) - 1))], 1),
        max_ms=round(milliseconds[-1], 1),
        memory_start_mb=round(memory_start),
        memory_end_mb=round(memory_end),
        processes=processes,
        stop_seconds=round(stop_seconds, 1),
        left_running=left_running,
    )


def table(results: list[LoadResult], ckpt: Path, options: argparse.Namespace) -> str:
    lines = [
        f"`serve` under load: {options.clients} concurrent clients, {options.requests:,} requests each configuration,"
        f" test digits as PNG; checkpoint {ckpt}; the clients run on the same machine.",
        f"Command: `{' '.join(['python -m benchmarks.serve_load', *sys.argv[1:]])}`; load average at the start"
        f" {options.load_average:.2f} on {os.cpu_count()} CPUs.",
        "",
        "| configuration | req/s | p50 ms | p99 ms | max ms | failures | right digit | memory start -> end MB"
        " (PSS, processes) | SIGTERM -> all ended | left running |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.configuration} | {r.requests_per_second:.0f} | {r.p50_ms} | {r.p99_ms} | {r.max_ms} | {r.failures}"
            f" | {r.correct:,} / {r.requests:,} | {r.memory_start_mb:.0f} -> {r.memory_end_mb:.0f} ({r.processes})"
            f" | {r.stop_seconds} s | {r.left_running} |"
        )
    if options.rounds > 1:
        lines.append("")
        for label in dict.fromkeys(r.configuration for r in results):
            runs = [r for r in results if r.configuration == label]
            lines.append(
                f"- {label}, median of {len(runs)} rounds: {statistics.median(r.requests_per_second for r in runs):.0f}"
                f" req/s, p50 {statistics.median(r.p50_ms for r in runs):.1f} ms,"
                f" p99 {statistics.median(r.p99_ms for r in runs):.1f} ms"
            )
    return "\n".join(lines) + "\n"


def main(args: list[str] | None = None) -> None:
    options = parse_args(args)
    options.load_average = os.getloadavg()[0]  # other work on the machine shows in every figure
    ckpt = checkpoint_path(options.ckpt_path)
    bodies, labels = request_bodies(options.data_dir, options.requests)
    names = options.only.split(",") * options.rounds  # alternating: a change in the machine's load hits both alike
    results = [run_configuration(name, ckpt, options, bodies, labels) for name in names]
    report = table(results, ckpt, options)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "serve-latest.md").write_text(report)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (options.out / f"serve-{stamp}.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(report)
    if any(r.failures or r.left_running for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
