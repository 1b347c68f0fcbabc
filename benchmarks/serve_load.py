"""`make bench-serve`: load-test `python -m mnist_dense serve` with real test digits, batching on and off, and hostile.

For each configuration it starts the server as you would (a subprocess in an empty folder, so it runs with
the checkpoint alone), waits for `GET /health`, sends a short warm-up, then CLIENTS threads, each with its own
keep-alive connection, send REQUESTS `POST /predict` requests between them: the test digits as PNG, in order.
It reports requests per second, p50/p99/max latency, failures (anything but 200 with a digit) and how many
answers were the true label; memory (PSS, shared pages counted once) of the server's processes at the start
and the end; then SIGTERM, and checks that no process of the server is left. The clients run on the same
machine, so on 2 cores they take CPU time from the server: the figures are for the whole machine.

The hostile case (`--only hostile`): HOSTILE_CLIENTS clients, each from its own address, send in a loop
progressive JPEGs of 12,000 scans (tens of seconds of libjpeg each; also wrapped as MPO), legal 5000x5000 RGBA PNGs
(100 MB of pixels each) and 28x28 PNGs of 900,000 empty chunks (seconds of Pillow's chunk reading each), while one
client asks `GET /health` every 20 ms and others send test digits; the attack then pauses for the memory to be
measured again, resumes, and SIGTERM comes while the hostile pictures are still coming. Every client connects from
its own loopback address (127.0.1.N for digits, 127.0.2.N and 127.0.3.N hostile: all of 127/8 is this machine), as
clients of a public service come from their own hosts. `--public` runs the load cases both through
`serve --public` (nginx in front) and, alternating with it, `serve` alone, and the hostile case through nginx with
HOSTILE_CLIENTS more clients attacking the HTTP layer (`hostile.protocol_attackers`, from a process of their own);
its report goes into its own table.
Targets: `/health` within 100 ms and a digit within 500 ms at p99, at least 99% of the digits answered 200,
the memory within 10% of its start once the attack stops, every process gone within 5 s; through nginx, at most 15%
of `serve` alone's throughput lost.
Results: a table in runs/bench/serve-latest.md and the raw figures in runs/bench/serve-<time>.json.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torchvision.io import encode_png

from benchmarks import docs_tables
from benchmarks.hostile import as_mpo, empty_chunk_png, large_png, many_scan_jpeg, protocol_attackers
from benchmarks.serve_process import ServeProcess, free_port
from mnist_dense.data import load_split
from mnist_dense.data.files import default_data_dir
from mnist_dense.deploy.inference import checkpoint_path

CONFIGURATIONS = {
    "on": ("dynamic batching on (the default: up to 16 requests, 5 ms to fill)", []),
    "off": ("dynamic batching off (`--max_batch_size 1`)", ["--max_batch_size", "1"]),
}
WARM_UP = 200
HOSTILE_CLIENTS = 4
HOSTILE_KINDS = ("jpeg", "png", "chunks png", "mpo")
SETTLE_S = 5.0  # after the attack, before the memory is measured again
DIGITS_ANSWERED_TARGET = 0.99  # at least this share of the digits answered 200 under attack
MEMORY_TARGET = 1.10  # the memory after the attack: within 10% of the start
JSON = {"Content-Type": "application/json"}
HEALTH_EVERY_S = 0.02
TARGETS_MS = {"health": 100, "digit": 500}
STOP_TARGET_S = 5.0


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
    public: bool = False  # through nginx (`serve --public`)


FRONT_COST_TARGET = 0.15  # nginx in front costs at most this share of `serve` alone's throughput, in the same run
# A run with these at their defaults (any --rounds, --ckpt_path or --port) writes its report into docs/serving.md.
FULL_RUN = ("requests", "clients", "only", "hostile_requests", "hostile_clients", "data_dir")
DOCS_BLOCK = {False: "bench-serve", True: "bench-serve-public"}  # by --public


def parse_args(args: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", default="last", help="Checkpoint to serve (default: newest under runs/).")
    parser.add_argument("--requests", type=int, default=10_000, help="Requests a configuration (test digits).")
    parser.add_argument("--clients", type=int, default=16, help="Concurrent clients.")
    parser.add_argument("--only", default="on,off,hostile", help="Configurations to run: on, off, hostile.")
    parser.add_argument(
        "--hostile_requests", type=int, default=2_000, help="Digits sent while the hostile clients run."
    )
    parser.add_argument("--hostile_clients", type=int, default=4, help="Clients sending digits in the hostile case.")
    parser.add_argument(
        "--rounds", type=int, default=1, help="Rounds, alternating the configurations (on, off, on...)."
    )
    parser.add_argument("--port", type=int, default=None, help="Port for the server (default: a free one).")
    parser.add_argument(
        "--public", action="store_true", help="Through `serve --public` (nginx in front) instead of `serve` alone."
    )
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


def connect(port: int, source: str) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))


def start_server(ckpt: Path, flags: list[str], options: argparse.Namespace, public: bool | None = None) -> ServeProcess:
    """`serve` alone, or with `--public` nginx in front on the port the clients use."""
    if not (options.public if public is None else public):
        return ServeProcess(ckpt, *flags, port=options.port)
    port = options.port or free_port()
    return ServeProcess(ckpt, *flags, "--public", f"127.0.0.1:{port}", port=port)


def send_all(
    port: int, bodies: list[bytes], labels: list[int], clients: int, failed: Counter[str] | None = None
) -> tuple[list[float], int, int, float]:
    """Clients threads, each from its own address, take the next request until none is left; returns latencies (s),
    failures, correct, wall. `failed` counts the failures by status (and detail's first words)."""
    failed = Counter() if failed is None else failed
    next_index, lock = iter(range(len(bodies))), threading.Lock()
    latencies: list[float] = []
    counts = {"failures": 0, "correct": 0}

    def client(source: str) -> None:
        connection = connect(port, source)
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
                why = f"{response.status} {' '.join(str(answer.get('detail', '')).split()[:4])}".strip()
            except (OSError, http.client.HTTPException, ValueError):
                connection.close()
                connection = connect(port, source)
                ok = correct = False
                why = "no answer"
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                counts["failures"] += not ok
                failed[why] += not ok
                counts["correct"] += bool(correct)

    threads = [threading.Thread(target=client, args=(f"127.0.1.{i + 1}",)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, counts["failures"], counts["correct"], time.perf_counter() - start


def run_configuration(
    name: str, ckpt: Path, options: argparse.Namespace, bodies: list[bytes], labels: list[int], public: bool
) -> LoadResult:
    label, flags = CONFIGURATIONS[name]
    with start_server(ckpt, flags, options, public) as server:
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
        public=public,
    )


@dataclass
class HostileResult:
    digits: int
    digit_p50_ms: float
    digit_p99_ms: float
    digit_max_ms: float
    digit_failures: int
    right_digits: int
    health_checks: int
    health_p50_ms: float
    health_p99_ms: float
    health_max_ms: float
    health_failures: int
    hostile_answers: dict[str, int] = field(default_factory=dict)
    digit_failed_answers: dict[str, int] = field(default_factory=dict)
    stop_seconds: float = 0.0
    left_running: int = 0
    left_in_temporary: list[str] = field(default_factory=list)
    memory_start_mb: float = 0.0
    memory_peak_mb: float = 0.0
    memory_after_mb: float = 0.0


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max in milliseconds."""
    ms = sorted(1000 * s for s in seconds) or [float("nan")]
    return round(statistics.median(ms), 1), round(ms[int(0.99 * (len(ms) - 1))], 1), round(ms[-1], 1)


def hostile_bodies() -> list[bytes]:
    jpeg = many_scan_jpeg(5000, 12_000)
    pictures = [jpeg, large_png(5000), empty_chunk_png(900_000), as_mpo(jpeg)]
    return [json.dumps({"image": base64.b64encode(picture).decode()}).encode() for picture in pictures]


def run_hostile(ckpt: Path, options: argparse.Namespace, bodies: list[bytes], labels: list[int]) -> HostileResult:
    """Hostile clients in a loop, /health probed, digits sent; then SIGTERM while the hostile pictures still come."""
    hostile, stopping, stop, paused = hostile_bodies(), threading.Event(), threading.Event(), threading.Event()
    memory: list[float] = []
    answers: Counter[str] = Counter()  # until SIGTERM
    health: list[tuple[float, bool]] = []  # (seconds, answered 200) until SIGTERM

    def attack(first: int) -> None:
        source = f"127.0.2.{first + 1}"
        connection = connect(server.port, source)
        for i in range(first, 10**9):
            while paused.is_set() and not stop.is_set():
                time.sleep(0.1)
            if stop.is_set():
                return
            try:
                connection.request("POST", "/predict", body=hostile[i % len(hostile)], headers=JSON)
                response = connection.getresponse()
                response.read()
                answer = str(response.status)
            except (OSError, http.client.HTTPException):
                answer = "no answer"
                connection.close()
                connection = connect(server.port, source)
            if not stopping.is_set():
                answers[f"{HOSTILE_KINDS[i % len(hostile)]} {answer}"] += 1

    def probe() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while not stop.is_set():
            start = time.perf_counter()
            try:
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                ok = False
            if not stopping.is_set():
                health.append((time.perf_counter() - start, ok))
            time.sleep(HEALTH_EVERY_S)

    def sample(server: ServeProcess) -> None:
        while not stopping.is_set():
            memory.append(server.memory_mb())
            time.sleep(0.5)

    with start_server(ckpt, [], options) as server:
        send_all(server.port, bodies[:WARM_UP], labels[:WARM_UP], options.hostile_clients)
        memory_start = server.memory_mb()
        attackers = [threading.Thread(target=attack, args=(i,), daemon=True) for i in range(HOSTILE_CLIENTS)]
        prober = threading.Thread(target=probe, daemon=True)
        sampler = threading.Thread(target=sample, args=(server,), daemon=True)
        for thread in [*attackers, prober, sampler]:
            thread.start()
        if options.public:  # the HTTP layer's attacks, which the front server bounds, from a process of their own
            sources = [f"127.0.3.{i + 1}" for i in range(HOSTILE_CLIENTS)]
            spawn = multiprocessing.get_context("spawn")
            stop_all, pause_all = spawn.Event(), spawn.Event()
            protocol = spawn.Process(target=protocol_attackers, args=(server.port, sources, stop_all, pause_all))
            protocol.start()
        time.sleep(1.0)  # the hostile pictures are arriving before the first digit
        failed: Counter[str] = Counter()
        latencies, failures, correct, _ = send_all(server.port, bodies, labels, options.hostile_clients, failed)
        paused.set()  # the attack stops a while: the memory must come back
        if options.public:
            pause_all.set()
        time.sleep(SETTLE_S)
        memory_after = server.memory_mb()
        paused.clear()
        if options.public:
            pause_all.clear()
        time.sleep(1.0)  # and resumes: SIGTERM arrives while it goes on
        stopping.set()
        stop_seconds = server.stop(signal.SIGTERM)  # the hostile clients are still sending
        stop.set()
        if options.public:
            stop_all.set()
            protocol.join(60)
        left_running, left_in_temporary = len(server.processes()), server.left_in_temporary()
        for thread in [*attackers, prober]:
            thread.join(60)
    digit, health_ms = percentiles(latencies), percentiles([seconds for seconds, _ in health])
    return HostileResult(
        digits=len(latencies),
        digit_p50_ms=digit[0],
        digit_p99_ms=digit[1],
        digit_max_ms=digit[2],
        digit_failures=failures,
        right_digits=correct,
        health_checks=len(health),
        health_p50_ms=health_ms[0],
        health_p99_ms=health_ms[1],
        health_max_ms=health_ms[2],
        health_failures=sum(not ok for _, ok in health),
        hostile_answers=dict(sorted(answers.items())),
        digit_failed_answers={key: count for key, count in sorted(failed.items()) if count},
        stop_seconds=round(stop_seconds, 1),
        left_running=left_running,
        left_in_temporary=left_in_temporary,
        memory_start_mb=round(memory_start),
        memory_peak_mb=round(max(memory, default=memory_start)),
        memory_after_mb=round(memory_after),
    )


def hostile_table(result: HostileResult, options: argparse.Namespace) -> str:
    def verdict(value: float, target: float) -> str:
        return f"{'met' if value <= target else 'MISSED'} (target <= {target:g})"

    answered = 1 - result.digit_failures / max(result.digits, 1)
    return "\n".join([
        f"Hostile case{through(options)}: {HOSTILE_CLIENTS} clients, each from its own address, send 5000x5000"
        " progressive JPEGs of 12,000 scans (also wrapped as MPO), 5000x5000 RGBA PNGs and 28x28 PNGs of 900,000"
        " empty chunks in a loop;"
        + (f" {HOSTILE_CLIENTS} more, each from its own address with 20 idle sockets open, loop endless chunked"
           " trailers, pipelining floods, answers never read, trickled headers, 8 MB of headers and 16 MB bodies;"
           if options.public else "")
        +
        f" one client asks GET /health every {1000 * HEALTH_EVERY_S:.0f} ms;"
        f" {options.hostile_clients} clients send {result.digits:,} test digits as PNG; then SIGTERM.",
        "",
        "| | requests | p50 ms | p99 ms | max ms | failures | target p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| GET /health | {result.health_checks:,} | {result.health_p50_ms} | {result.health_p99_ms}"
        f" | {result.health_max_ms} | {result.health_failures}"
        f" | {verdict(result.health_p99_ms, TARGETS_MS['health'])} |",
        f"| POST /predict, a digit | {result.digits:,} | {result.digit_p50_ms} | {result.digit_p99_ms}"
        f" | {result.digit_max_ms} | {result.digit_failures} | {verdict(result.digit_p99_ms, TARGETS_MS['digit'])} |",
        "",
        f"- digits answered 200: {result.digits - result.digit_failures:,} / {result.digits:,}"
        f" ({100 * answered:.1f}%, {'met' if answered >= DIGITS_ANSWERED_TARGET else 'MISSED'}"
        f" (target >= {100 * DIGITS_ANSWERED_TARGET:g}%));"
        f" right digits: {result.right_digits:,} / {result.digits:,}; digits that failed, by answer: "
        + (", ".join(f"{key}: {count:,}" for key, count in result.digit_failed_answers.items()) or "none"),
        "- hostile answers: " + ", ".join(f"{key}: {count:,}" for key, count in result.hostile_answers.items()),
        f"- memory of all the service's processes (PSS): {result.memory_start_mb:,} MB before the attack, at most"
        f" {result.memory_peak_mb:,} MB during it, {result.memory_after_mb:,} MB {SETTLE_S:g} s after it stopped"
        f" (ratio {result.memory_after_mb / result.memory_start_mb:.2f}:"
        f" {verdict(result.memory_after_mb / result.memory_start_mb, MEMORY_TARGET)})",
        f"- SIGTERM while hostile pictures were still coming -> every process ended: {result.stop_seconds} s,"
        f" {verdict(result.stop_seconds, STOP_TARGET_S)}; left running: {result.left_running};"
        f" left in the temporary directory: {result.left_in_temporary or 'nothing'}",
    ]) + "\n"  # fmt: skip


def through(options: argparse.Namespace) -> str:
    return " through nginx (`serve --public`)" if options.public else ""


def table(results: list[LoadResult], options: argparse.Namespace) -> str:
    beside = " and, beside it in the same run, `serve` alone" if options.public else ""
    lines = [
        f"`serve`{through(options)}{beside} under load: {options.clients} concurrent clients, each from its own"
        f" address, {options.requests:,} requests each configuration, test digits as PNG.",
        "",
        "| configuration | req/s | p50 ms | p99 ms | max ms | failures | right digit | memory start -> end MB"
        " (PSS, processes) | SIGTERM -> all ended | left running |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        way = (", through nginx" if r.public else ", `serve` alone") if options.public else ""
        lines.append(
            f"| {r.configuration}{way} | {r.requests_per_second:.0f} | {r.p50_ms} | {r.p99_ms} | {r.max_ms}"
            f" | {r.failures}"
            f" | {r.correct:,} / {r.requests:,} | {r.memory_start_mb:.0f} -> {r.memory_end_mb:.0f} ({r.processes})"
            f" | {r.stop_seconds} s | {r.left_running} |"
        )
    if options.public:
        lines.append("")
        for label in dict.fromkeys(r.configuration for r in results):
            alone, front = (
                statistics.median(r.requests_per_second for r in results if r.configuration == label and r.public == w)
                for w in (False, True)
            )
            cost = 1 - front / alone
            verdict = "met" if cost <= FRONT_COST_TARGET else "MISSED"
            lines.append(
                f"- {label}: through nginx {front:.0f} req/s against {alone:.0f} alone, a cost of {100 * cost:.0f}%"
                f" of the throughput ({verdict}: target <= {100 * FRONT_COST_TARGET:.0f}%)"
            )
    if options.rounds > 1:
        lines.append("")
        for label in dict.fromkeys((r.configuration, r.public) for r in results):
            runs = [r for r in results if (r.configuration, r.public) == label]
            lines.append(
                f"- {label[0]}{', through nginx' if label[1] else ''}, median of {len(runs)} rounds:"
                f" {statistics.median(r.requests_per_second for r in runs):.0f}"
                f" req/s, p50 {statistics.median(r.p50_ms for r in runs):.1f} ms,"
                f" p99 {statistics.median(r.p99_ms for r in runs):.1f} ms"
            )
    return "\n".join(lines) + "\n"


def main(args: list[str] | None = None) -> None:
    options = parse_args(args)
    options.load_average = os.getloadavg()[0]  # other work on the machine shows in every figure
    ckpt = checkpoint_path(options.ckpt_path)
    bodies, labels = request_bodies(options.data_dir, max(options.requests, options.hostile_requests))
    only = options.only.split(",")
    names = [name for name in only if name in CONFIGURATIONS] * options.rounds  # alternating: load hits both alike
    ways = [False, True] if options.public else [False]  # through nginx: `serve` alone beside it, alternating
    results = [
        run_configuration(name, ckpt, options, bodies[: options.requests], labels, public)
        for name in names
        for public in ways
    ]
    hostile = None
    if "hostile" in only:
        hostile = run_hostile(ckpt, options, bodies[: options.hostile_requests], labels[: options.hostile_requests])
    report = (
        f"Command: `{' '.join(['python -m benchmarks.serve_load', *sys.argv[1:]])}`; checkpoint {ckpt}; the clients"
        f" run on the same machine; load average at the start {options.load_average:.2f} on {os.cpu_count()} CPUs.\n\n"
    )
    parts = ([table(results, options)] if results else []) + ([hostile_table(hostile, options)] if hostile else [])
    report += "\n".join(parts)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "serve-latest.md").write_text(report)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = {"load": [asdict(r) for r in results], "hostile": asdict(hostile) if hostile else None}
    (options.out / f"serve-{stamp}.json").write_text(json.dumps(raw, indent=2))
    print(report)
    defaults = parse_args([])
    if all(getattr(options, name) == getattr(defaults, name) for name in FULL_RUN):
        command = " ".join(["python -m benchmarks.serve_load", *sys.argv[1:]])
        page = docs_tables.write_stamped(
            DOCS_BLOCK[options.public], command, f"load average {options.load_average:.1f} at the start", report
        )
        print(f"Written: the report into {page}")
    failed = any(r.failures or r.left_running for r in results)
    if failed or (hostile and (hostile.digit_failures or hostile.left_running)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
