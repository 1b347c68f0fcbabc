"""`make bench-serve`: load-test `python -m mnist_dense serve` with real test digits, batching on and off, and hostile.

For each configuration it starts the server as you would (a subprocess in an empty folder, so it runs with
the checkpoint alone), waits for `GET /health`, sends a short warm-up, then CLIENTS threads, each with its own
keep-alive connection, send REQUESTS `POST /predict` requests between them: the test digits as PNG, in order.
It reports requests per second, p50/p99/max latency, failures (anything but 200 with a digit) and how many
answers were the true label; memory (PSS, shared pages counted once) of the server's processes at the start
and the end; then SIGTERM, and checks that no process of the server is left. The clients run on the same
machine, so on 2 cores they take CPU time from the server: the figures are for the whole machine.

The load cases run through the one-command deployment, `serve --public` (nginx in front), and, alternating with it in
the same run, against `serve` alone, so that the front's cost is measured side by side.

The hostile case (`--only hostile`), through `serve --public`: HOSTILE_CLIENTS clients, each from its own address,
send in a loop progressive JPEGs of 12,000 scans (tens of seconds of libjpeg each; also wrapped as MPO), legal
5000x5000 RGBA PNGs (100 MB of pixels each) and 28x28 PNGs of 900,000 empty chunks (seconds of Pillow's chunk reading
each); HOSTILE_CLIENTS more attack the HTTP layer (endless trailers, pipelining floods, answers never read, trickled
headers, 8 MB of headers, 16 MB bodies, idle sockets); all of them run in a process of their own at the lowest CPU
priority (`hostile.attackers`: on a public service they would run on their own machines). Meanwhile one client asks
`GET /health` every 20 ms and others send test digits; the attack then pauses for the memory to be measured again,
resumes, and SIGTERM comes while the hostile pictures are still coming. Every client connects from its own loopback
address (127.0.1.N for digits, 127.0.2.N and 127.0.3.N hostile: all of 127/8 is this machine), as clients of a public
service come from their own hosts. `--alone` runs every case against `serve` alone instead (the HTTP layer's
attackers left out: the in-process server is for this machine only).
Targets: `/health` within 100 ms and a digit within 500 ms at p99, at least 99% of the digits answered 200,
the memory within 10% of its start once the attack stops, every process gone within 5 s; through nginx, at most 15%
of `serve` alone's throughput lost.
Results: a table in runs/bench/serve-latest.md and the raw figures in runs/bench/serve-<time>.json; a run of a case
with its default requests and clients writes that case's table into docs/serving.md as well.
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
from benchmarks.hostile import as_mpo, attackers, empty_chunk_png, large_png, many_scan_jpeg
from benchmarks.serve_process import ServeProcess, connect, free_port
from mnist_dense.data import load_split
from mnist_dense.data.files import default_data_dir
from mnist_dense.deploy.front import find_nginx
from mnist_dense.deploy.inference import checkpoint_path
from mnist_dense.deploy.limits import LIMITS, ServiceLimits

CONFIGURATIONS = {
    "on": ("dynamic batching on (the default: up to 16 requests, 5 ms to fill)", []),
    "off": ("dynamic batching off (`--max_batch_size 1`)", ["--max_batch_size", "1"]),
}
WARM_UP = 200
HOSTILE_CLIENTS = 4
SETTLE_S = 5.0  # after the attack, before the memory is measured again
# The memory during the attack, sampled this often: reading a process' PSS (/proc/PID/smaps_rollup) walks its page
# tables under its memory map's lock, which stalls that process a moment, so sampling every 0.5 s cost /health
# about 20 ms of its p99.
MEMORY_EVERY_S = 2.0
# Under attack each digit client keeps within this share of the per-client rate that nginx allows (`serve --public`
# answers 429 beyond): the attackers are the ones to be refused, not the ordinary clients.
DIGIT_RATE_SHARE = 0.8
ATTACK_HEAD_START_S = 3.0  # the attackers' process starts (and builds its pictures' requests) before the digits
DIGITS_ANSWERED_TARGET = 0.99  # at least this share of the digits answered 200 under attack
MEMORY_TARGET = 1.10  # the memory after the attack: within 10% of the start
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
# A case run with these at their defaults (any --rounds, --ckpt_path or --port) writes its table into docs/serving.md,
# into the block named here by (case, --alone).
FULL_RUN = {"load": ("requests", "clients", "data_dir"), "hostile": ("hostile_requests", "hostile_clients", "data_dir")}
DOCS_BLOCKS = {
    ("load", False): "bench-serve-load",
    ("hostile", False): "bench-serve-hostile",
    ("hostile", True): "bench-serve-alone-hostile",
}


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
        "--alone", action="store_true", help="Against `serve` alone only, without nginx in front (`serve --public`)."
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


def start_server(ckpt: Path, flags: list[str], options: argparse.Namespace, public: bool) -> ServeProcess:
    """`serve` alone, or with `--public` nginx in front on the port the clients use."""
    if not public:
        return ServeProcess(ckpt, *flags, port=options.port)
    port = options.port or free_port()
    return ServeProcess(ckpt, *flags, "--public", f"127.0.0.1:{port}", port=port)


def send_all(
    port: int,
    bodies: list[bytes],
    labels: list[int],
    clients: int,
    failed: Counter[str] | None = None,
    rate: float | None = None,
) -> tuple[list[float], int, int, float]:
    """Clients threads, each from its own address, take the next request until none is left; returns latencies (s),
    failures, correct, wall. `failed` counts the failures by status (and detail's first words). With `rate`, each
    client sends at most that many requests a second, as a well-behaved client of a rate-limited service does."""
    failed = Counter() if failed is None else failed
    next_index, lock = iter(range(len(bodies))), threading.Lock()
    latencies: list[float] = []
    counts = {"failures": 0, "correct": 0}

    def client(source: str) -> None:
        connection = connect(port, source)
        headers = {"Content-Type": "application/json"}
        due = time.perf_counter()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            if rate:
                time.sleep(max(0.0, due - time.perf_counter()))
                due = max(due, time.perf_counter() - 1.0) + 1 / rate  # a slow answer is not made up for by a burst
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
    tracebacks: int = 0  # in the log of `serve` (nginx's messages included) from start to end
    memory_start_mb: float = 0.0
    memory_peak_mb: float = 0.0
    memory_after_mb: float = 0.0
    public: bool = True  # through nginx (`serve --public`)
    digit_clients: int = 0


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max in milliseconds."""
    ms = sorted(1000 * s for s in seconds) or [float("nan")]
    return round(statistics.median(ms), 1), round(ms[int(0.99 * (len(ms) - 1))], 1), round(ms[-1], 1)


def hostile_bodies() -> dict[str, bytes]:
    """The hostile pictures as JSON bodies, by kind."""
    jpeg = many_scan_jpeg(5000, 12_000)
    pictures = {"jpeg": jpeg, "png": large_png(5000), "chunks png": empty_chunk_png(900_000), "mpo": as_mpo(jpeg)}
    return {kind: json.dumps({"image": base64.b64encode(data).decode()}).encode() for kind, data in pictures.items()}


def run_hostile(ckpt: Path, options: argparse.Namespace, bodies: list[bytes], labels: list[int]) -> HostileResult:
    """Hostile clients in a loop, /health probed, digits sent; then SIGTERM while the hostile pictures still come."""
    public = not options.alone
    stopping, stop = threading.Event(), threading.Event()
    memory: list[float] = []
    health: list[tuple[float, bool]] = []  # (seconds, answered 200) until SIGTERM

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
            time.sleep(MEMORY_EVERY_S)

    spawn = multiprocessing.get_context("spawn")
    stop_attack, paused, counting, results = spawn.Event(), spawn.Event(), spawn.Event(), spawn.Queue()
    pictures = [f"127.0.2.{i + 1}" for i in range(HOSTILE_CLIENTS)]
    protocol = [f"127.0.3.{i + 1}" for i in range(HOSTILE_CLIENTS)] if public else []  # the front server's share
    hostile = hostile_bodies()
    with start_server(ckpt, [], options, public) as server:
        send_all(server.port, bodies[:WARM_UP], labels[:WARM_UP], options.hostile_clients)
        memory_start = server.memory_mb()
        counting.set()
        attack = spawn.Process(
            target=attackers,
            args=(server.port, pictures, protocol, hostile, stop_attack, paused, counting, results),
            daemon=True,  # ended with this process, whatever ends it
        )
        attack.start()
        prober = threading.Thread(target=probe, daemon=True)
        sampler = threading.Thread(target=sample, args=(server,), daemon=True)
        for thread in [prober, sampler]:
            thread.start()
        time.sleep(ATTACK_HEAD_START_S)  # the hostile requests are arriving before the first digit
        failed: Counter[str] = Counter()
        latencies, failures, correct, _ = send_all(
            server.port, bodies, labels, options.hostile_clients, failed, rate=DIGIT_RATE_SHARE * LIMITS.per_client_rate
        )
        paused.set()  # the attack stops a while: the memory must come back
        time.sleep(SETTLE_S)
        memory_after = server.memory_mb()
        paused.clear()
        time.sleep(1.0)  # and resumes: SIGTERM arrives while it goes on
        stopping.set()
        counting.clear()
        stop_seconds = server.stop(signal.SIGTERM)  # the hostile clients are still sending
        stop.set()
        stop_attack.set()
        answers = results.get(timeout=60)
        attack.join(60)
        left_running, left_in_temporary = len(server.processes()), server.left_in_temporary()
        tracebacks = server.output().count("Traceback (most recent call last)")
        prober.join(60)
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
        public=public,
        digit_clients=options.hostile_clients,
        digit_failed_answers={key: count for key, count in sorted(failed.items()) if count},
        stop_seconds=round(stop_seconds, 1),
        left_running=left_running,
        left_in_temporary=left_in_temporary,
        tracebacks=tracebacks,
        memory_start_mb=round(memory_start),
        memory_peak_mb=round(max(memory, default=memory_start)),
        memory_after_mb=round(memory_after),
    )


MEMORY_BOUND = (
    f"the start, {LIMITS.decode_memory_mb} MB for each of the {LIMITS.decoders} decoders, and twice the"
    f" {LIMITS.max_body_bytes // 1_000_000} MB body limit for each of {LIMITS.max_connections} connections"
)


def memory_bound_mb(start_mb: float, limits: ServiceLimits = LIMITS) -> float:
    """What the limits let the service's processes hold at most: each decoder's cap on what one picture may add, and
    each connection's body, as its parts and once joined (`http_guard.RequestGuard`); nginx keeps bodies on disk."""
    bodies_mb = limits.max_connections * 2 * limits.max_body_bytes / 1e6
    return start_mb + limits.decoders * limits.decode_memory_mb + bodies_mb


def hostile_table(result: HostileResult) -> str:
    def verdict(value: float, target: float) -> str:
        return f"{'met' if value <= target else 'MISSED'} (target <= {target:g})"

    answered = 1 - result.digit_failures / max(result.digits, 1)
    return "\n".join([
        f"Hostile case{through(result.public)}: {HOSTILE_CLIENTS} clients, each from its own address, send 5000x5000"
        " progressive JPEGs of 12,000 scans (also wrapped as MPO), 5000x5000 RGBA PNGs and 28x28 PNGs of 900,000"
        " empty chunks in a loop;"
        + (f" {HOSTILE_CLIENTS} more, each from its own address with 20 idle sockets open, loop endless chunked"
           " trailers, pipelining floods, answers never read, trickled headers, 8 MB of headers and 16 MB bodies;"
           if result.public else "")
        + " the attackers run in a process of their own at the lowest CPU priority (nice 19), as if on their own"
        " machines;"
        f" one client asks GET /health every {1000 * HEALTH_EVERY_S:.0f} ms;"
        f" {result.digit_clients} clients send {result.digits:,} test digits as PNG; then SIGTERM.",
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
        f" {result.memory_peak_mb:,} MB during it (bound by the limits: {memory_bound_mb(result.memory_start_mb):,.0f}"
        f" MB, {MEMORY_BOUND}), {result.memory_after_mb:,} MB {SETTLE_S:g} s after it stopped"
        f" (ratio {result.memory_after_mb / result.memory_start_mb:.2f}:"
        f" {verdict(result.memory_after_mb / result.memory_start_mb, MEMORY_TARGET)})",
        f"- SIGTERM while hostile pictures were still coming -> every process ended: {result.stop_seconds} s,"
        f" {verdict(result.stop_seconds, STOP_TARGET_S)}; left running: {result.left_running};"
        f" left in the temporary directory: {result.left_in_temporary or 'nothing'}",
        f"- tracebacks in the log of `serve`{' and nginx' if result.public else ''}: {result.tracebacks}"
        f" ({'met' if result.tracebacks == 0 else 'MISSED'} (target 0))",
    ]) + "\n"  # fmt: skip


def through(public: bool) -> str:
    return " through nginx (`serve --public`)" if public else ", `serve` alone"


def table(results: list[LoadResult], options: argparse.Namespace) -> str:
    public = not options.alone
    way = " through nginx (`serve --public`) and, beside it in the same run, `serve` alone" if public else " alone"
    lines = [
        f"`serve`{way} under load: {options.clients} concurrent clients, each from its own"
        f" address, {options.requests:,} requests each configuration, test digits as PNG.",
        "",
        "| configuration | req/s | p50 ms | p99 ms | max ms | failures | right digit | memory start -> end MB"
        " (PSS, processes) | SIGTERM -> all ended | left running |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        way = (", through nginx" if r.public else ", `serve` alone") if public else ""
        lines.append(
            f"| {r.configuration}{way} | {r.requests_per_second:.0f} | {r.p50_ms} | {r.p99_ms} | {r.max_ms}"
            f" | {r.failures}"
            f" | {r.correct:,} / {r.requests:,} | {r.memory_start_mb:.0f} -> {r.memory_end_mb:.0f} ({r.processes})"
            f" | {r.stop_seconds} s | {r.left_running} |"
        )
    if public:
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
    if not options.alone:
        find_nginx()  # the deployment measured: without nginx, the sentence that says how to install it
    bodies, labels = request_bodies(options.data_dir, max(options.requests, options.hostile_requests))
    only = options.only.split(",")
    names = [name for name in only if name in CONFIGURATIONS] * options.rounds  # alternating: load hits both alike
    ways = [False] if options.alone else [False, True]  # through nginx: `serve` alone beside it, alternating
    results = [
        run_configuration(name, ckpt, options, bodies[: options.requests], labels, public)
        for name in names
        for public in ways
    ]
    hostile = None
    if "hostile" in only:
        hostile = run_hostile(ckpt, options, bodies[: options.hostile_requests], labels[: options.hostile_requests])
    command = " ".join(["python -m benchmarks.serve_load", *sys.argv[1:]])
    heading = (
        f"Command: `{command}`; checkpoint {ckpt}; the clients run on the same machine; load average at the start"
        f" {options.load_average:.2f} on {os.cpu_count()} CPUs.\n\n"
    )
    parts = {"load": table(results, options) if results else "", "hostile": hostile_table(hostile) if hostile else ""}
    report = heading + "\n".join(part for part in parts.values() if part)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "serve-latest.md").write_text(report)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = {"load": [asdict(r) for r in results], "hostile": asdict(hostile) if hostile else None}
    (options.out / f"serve-{stamp}.json").write_text(json.dumps(raw, indent=2))
    print(report)
    defaults = parse_args([])
    ran = {"load": set(CONFIGURATIONS) <= set(only), "hostile": "hostile" in only}
    for case, part in parts.items():
        block = DOCS_BLOCKS.get((case, options.alone))
        if block and ran[case] and all(getattr(options, name) == getattr(defaults, name) for name in FULL_RUN[case]):
            load = f"load average {options.load_average:.1f} at the start"
            print(f"Written: the {case} table into {docs_tables.write_stamped(block, command, load, heading + part)}")
    failed = any(r.failures or r.left_running for r in results)
    if failed or (hostile and (hostile.digit_failures or hostile.left_running)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
