"""`make bench`: the package against the usual port and a plain loop, side by side, alternating.

Each run is a separate process, started as a user would start it:
  (a) `python -m mnist_dense fit` (an epoch timer is added with `--trainer.callbacks+=`; it does not
      change what is computed),
  (b) `python -m benchmarks.baselines usual-port`,
  (c) `python -m benchmarks.baselines plain-loop`,
in the order a, b, c, a, b, c, ... for `--repeats` rounds, so that a busy machine slows all of them
alike. Reported: median and fastest training seconds per epoch (the fastest is what a run costs when
nothing else interferes), median and fastest whole-process seconds, peak resident memory
(from `os.wait4`, per child) and test accuracy, the ratios the targets are stated in, a Markdown
table (printed and written to runs/bench/latest.md) and the raw figures (runs/bench/<time>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.baselines import RESULT_PREFIX

NAMES = {
    "a": "(a) `python -m mnist_dense fit`",
    "b": "(b) the usual port (torchvision dataset, DataLoader, per-step logging)",
    "c": "(c) a plain PyTorch loop over in-memory tensors",
}
TEST_LINE = re.compile(r"Test accuracy: ([0-9.]+)%")
# The targets: a/c per epoch at most 1.3, b/a whole process at least 6, |a-c| accuracy at most
# 0.3 points, peak memory of (a) below 1.5 GB.
MAX_EPOCH_RATIO, MIN_PROCESS_RATIO, MAX_ACC_GAP, MAX_PEAK_MB = 1.3, 6.0, 0.3, 1536


def command(which: str, args: argparse.Namespace, run_dir: Path) -> list[str]:
    common = ["--epochs", str(args.epochs), "--seed", str(args.seed), "--data_dir", args.data_dir]
    limit = ["--limit", str(args.limit)] if args.limit else []
    if which == "b":
        return [
            sys.executable,
            "-m",
            "benchmarks.baselines",
            "usual-port",
            *common,
            *limit,
            "--root_dir",
            str(run_dir),
        ]
    if which == "c":
        return [sys.executable, "-m", "benchmarks.baselines", "plain-loop", *common, *limit]
    fit = [sys.executable, "-m", "mnist_dense", "fit", "--seed_everything", str(args.seed)]
    fit += ["--trainer.max_epochs", str(args.epochs), "--trainer.default_root_dir", str(run_dir)]
    fit += ["--data.data_dir", args.data_dir, "--trainer.enable_progress_bar", "false"]
    fit += ["--trainer.callbacks+=benchmarks.baselines.EpochTimer"]
    if args.limit:
        fit += ["--trainer.limit_train_batches", str(args.limit)]
    return fit


def run_one(which: str, args: argparse.Namespace, run_dir: Path) -> dict:
    """Run one child process; its own peak RSS comes from wait4, its figures from its RESULT lines."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "output.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command(which, args, run_dir), stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    output = log_path.read_text()
    if process.returncode != 0:
        tail = "\n".join(output.splitlines()[-15:])
        raise SystemExit(
            f"error: run ({which}) exited with {process.returncode}; its output ({log_path}) ends:\n{tail}"
        )
    results = [json.loads(line[len(RESULT_PREFIX) :]) for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    if which == "a":
        epoch_seconds = [r["train_seconds"] for r in results if "train_seconds" in r]
        match = TEST_LINE.search(output)
        test_acc = float(match.group(1)) / 100 if match else float("nan")
    else:
        final = next(r for r in results if "which" in r)
        epoch_seconds, test_acc = final["epoch_seconds"], final["test_acc"]
    return {
        "which": which,
        "epoch_seconds": epoch_seconds,
        "process_seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "test_acc": test_acc,
    }


def summarize(runs: list[dict], order: list[str]) -> dict:
    summary = {}
    for which in order:
        mine = [r for r in runs if r["which"] == which]
        summary[which] = {
            "epoch_seconds": statistics.median(statistics.median(r["epoch_seconds"]) for r in mine),
            "process_seconds": statistics.median(r["process_seconds"] for r in mine),
            "fastest_epoch_seconds": min(min(r["epoch_seconds"]) for r in mine),
            "fastest_process_seconds": min(r["process_seconds"] for r in mine),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in mine),
            "test_acc": statistics.median(r["test_acc"] for r in mine),
        }
    return summary


def table(summary: dict, args: argparse.Namespace) -> str:
    lines = [
        f"Bundled MNIST, batch 32, {args.epochs} epoch(s){f', {args.limit} batches an epoch' if args.limit else ''},"
        f" seed {args.seed}, {args.repeats} alternating round(s): median (fastest).",
        f"Command: `{' '.join(['python -m benchmarks.bench', *args.argv])}`;"
        f" load average at the start {args.load:.2f} on {os.cpu_count()} CPUs.",
        "",
        "| run | s/epoch (training) | whole process s | peak memory MB | test accuracy % |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for which, row in summary.items():
        lines.append(
            f"| {NAMES[which]} | {row['epoch_seconds']:.2f} ({row['fastest_epoch_seconds']:.2f})"
            f" | {row['process_seconds']:.1f} ({row['fastest_process_seconds']:.1f}) | {row['peak_rss_mb']:.0f}"
            f" | {100 * row['test_acc']:.2f} |"
        )
    checks = []
    if "a" in summary and "c" in summary:
        a, c = summary["a"], summary["c"]
        ratio = a["epoch_seconds"] / c["epoch_seconds"]
        fastest = a["fastest_epoch_seconds"] / c["fastest_epoch_seconds"]
        checks.append(f"per epoch a/c = {ratio:.2f} median, {fastest:.2f} fastest (target <= {MAX_EPOCH_RATIO})")
        gap = 100 * abs(a["test_acc"] - c["test_acc"])
        checks.append(f"accuracy |a - c| = {gap:.2f} points (target <= {MAX_ACC_GAP})")
    if "a" in summary and "b" in summary:
        ratio = summary["b"]["process_seconds"] / summary["a"]["process_seconds"]
        fastest = summary["b"]["fastest_process_seconds"] / summary["a"]["fastest_process_seconds"]
        checks.append(
            f"whole process b/a = {ratio:.1f}x median, {fastest:.1f}x fastest (target >= {MIN_PROCESS_RATIO})"
        )
    if "a" in summary:
        checks.append(f"peak memory of a = {summary['a']['peak_rss_mb']:.0f} MB (target < {MAX_PEAK_MB})")
    return "\n".join([*lines, "", *[f"- {check}" for check in checks]]) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians and minima over them")
    parser.add_argument("--only", default="a,b,c", help="which runs, e.g. a,c")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="training batches an epoch, for tiny runs")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--out_dir", default="runs/bench")
    args = parser.parse_args(argv)
    args.argv, args.load = argv, os.getloadavg()[0]
    order = [w.strip() for w in args.only.split(",") if w.strip()]
    if not order or any(w not in NAMES for w in order):
        parser.error(f"--only {args.only!r}: give a comma-separated subset of a,b,c")
    if args.epochs < 1 or args.repeats < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--epochs, --repeats and --limit must be at least 1")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(args.out_dir)
    runs = []
    for repeat in range(args.repeats):
        for which in order:
            print(f"round {repeat + 1}/{args.repeats}: {NAMES[which]} ...", file=sys.stderr, flush=True)
            runs.append(run_one(which, args, out_dir / stamp / f"{which}{repeat}"))
    summary = summarize(runs, order)
    markdown = table(summary, args)
    raw = {"time": stamp, "args": {k: v for k, v in vars(args).items()}, "runs": runs, "summary": summary}
    (out_dir / f"{stamp}.json").write_text(json.dumps(raw, indent=2) + "\n")
    (out_dir / "latest.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
