"""`make bench`: the package against the usual port, a plain loop and the tutorial's own Keras program, alternating.

Each run is a separate process, started as a user would start it:
  (a) `python -m mnist_dense fit`, progress bar on (its output goes to the run's log file, where the
      package's bar prints one line per epoch and draws no frames), with an epoch timer added by
      `--trainer.callbacks+=` (it does not change what is computed),
  (b) `python -m benchmarks.baselines usual-port`,
  (c) `python -m benchmarks.baselines plain-loop`,
  (d) `python -m benchmarks.keras_tutorial`: the tutorial's Keras program, with the interpreter of
      `--keras_python` (default: this one, when it can import tensorflow; otherwise (d) is left out with a line
      saying how to add it),
and (a) with `benchmarks.baselines.ProcessMarks` added the same way (time marks, nothing computed differently),
in the order a, b, c, d, a, b, c, d, ... for `--repeats` rounds, so that a busy machine slows all of them
alike. Reported: median and fastest training seconds per epoch (the fastest is what a run costs when
nothing else interferes) and the CPU seconds of those epochs (they move far less than the wall clock
when other jobs share the machine), median and fastest whole-process seconds and CPU seconds, peak resident
memory (from `os.wait4`, per child), test accuracy, each process split into imports, set-up, training, test,
pictures and shutdown (wall and CPU seconds, from the marks each process prints: `benchmarks.marks`), the ratios
the issues' targets are stated in, the load average at the start and the end, a Markdown table (printed and
written to runs/bench/latest.md) and the raw figures (runs/bench/<time>.json).

Threads: (a), (b) and (c) all compute with OMP_NUM_THREADS=N, `--threads N`: 1 by default, the count the CLI
chooses for the dense network (at batch 32 a second thread only spins); (d) runs with the threads TensorFlow
chooses.
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

from benchmarks import docs_tables
from benchmarks.baselines import result_lines, run_child
from benchmarks.marks import PHASES, phases

NAMES = {
    "a": "(a) `python -m mnist_dense fit`",
    "b": "(b) the usual port (torchvision dataset, DataLoader, per-step logging)",
    "c": "(c) a plain PyTorch loop over in-memory tensors",
    "d": "(d) the tutorial's Keras program (TensorFlow CPU)",
}
REPO = Path(__file__).resolve().parents[1]
PHASE_KEYS = ("seconds", "cpu_seconds")
TEST_LINE = re.compile(r"Test accuracy: ([0-9.]+)%")
# The issues' targets (issue 10, point 5; issue 13 lowered the first from 2.5): the default fit trains an epoch in at
# most 2.3x the plain loop and its whole process takes at most 2.0x the plain loop's, peak memory under 1.5 GB,
# accuracy unchanged (here: within 0.3 points of the plain loop, which trains the same network on the same batches).
# The opt-in grouped steps (at most 1.3x the plain loop per epoch) were tried and deleted: 1.6x, for 0.6 s an
# epoch (see git log).
MAX_EPOCH_RATIO, MAX_PROCESS_RATIO, MAX_PEAK_MB, MAX_ACC_GAP = 2.3, 2.0, 1536, 0.3
# Issue 13, point 8: the whole default fit in at most 0.9x the wall time and 1.0x the CPU seconds of the Keras program.
MAX_KERAS_WALL_RATIO, MAX_KERAS_CPU_RATIO = 0.9, 1.0


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
    if which == "d":
        return [args.keras_python, "-m", "benchmarks.keras_tutorial", *common, *limit]
    # As a user runs it: progress bar on (into the log file), only the epoch timer added
    fit = [sys.executable, "-m", "mnist_dense", "fit", "--seed_everything", str(args.seed)]
    fit += ["--trainer.max_epochs", str(args.epochs)]
    fit += ["--trainer.default_root_dir", str(run_dir), "--data.data_dir", args.data_dir]
    fit += ["--trainer.callbacks+=benchmarks.baselines.ProcessMarks"]  # first: before the CLI's RunPlots
    fit += ["--trainer.callbacks+=benchmarks.baselines.EpochTimer"]
    if args.limit:
        fit += ["--trainer.limit_train_batches", str(args.limit)]
    return fit


def environment(which: str, args: argparse.Namespace) -> dict[str, str]:
    """(a), (b), (c) with the same torch threads; (d) as TensorFlow chooses them, its module found from the repo."""
    if which == "d":
        return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}


def run_one(which: str, args: argparse.Namespace, run_dir: Path) -> dict:
    """Run one child process; its own peak RSS and CPU seconds come from wait4, its figures from its RESULT lines."""
    started = time.time()
    output, seconds, usage = run_child(command(which, args, run_dir), run_dir / "output.log", environment(which, args))
    cpu_seconds = usage.ru_utime + usage.ru_stime
    results = result_lines(output)
    final = next((r for r in results if "which" in r), {})
    epochs = [r for r in results if "train_seconds" in r]
    epoch_seconds = final.get("epoch_seconds") or [r["train_seconds"] for r in epochs]
    epoch_cpu_seconds = final.get("epoch_cpu_seconds") or [r["train_cpu_seconds"] for r in epochs]
    if which == "a":
        match = TEST_LINE.search(output)
        test_acc = float(match.group(1)) / 100 if match else float("nan")
    else:
        test_acc = final["test_acc"]
    return {
        "which": which,
        "epoch_seconds": epoch_seconds,
        "epoch_cpu_seconds": epoch_cpu_seconds,
        "process_seconds": seconds,
        "process_cpu_seconds": cpu_seconds,
        "phases": phases(results, started, started + seconds, cpu_seconds),
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "test_acc": test_acc,
    }


def summarize(runs: list[dict], order: list[str]) -> dict:
    summary = {}
    for which in order:
        mine = [r for r in runs if r["which"] == which]
        summary[which] = {
            "epoch_seconds": statistics.median(statistics.median(r["epoch_seconds"]) for r in mine),
            "epoch_cpu_seconds": statistics.median(statistics.median(r["epoch_cpu_seconds"]) for r in mine),
            "process_seconds": statistics.median(r["process_seconds"] for r in mine),
            "process_cpu_seconds": statistics.median(r["process_cpu_seconds"] for r in mine),
            "fastest_epoch_seconds": min(min(r["epoch_seconds"]) for r in mine),
            "fastest_process_seconds": min(r["process_seconds"] for r in mine),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in mine),
            "test_acc": statistics.median(r["test_acc"] for r in mine),
            "phases": {
                phase: {key: statistics.median(r["phases"][phase][key] for r in mine) for key in PHASE_KEYS}
                for phase in PHASES
            },
        }
    return summary


def ratio_line(summary: dict, top: str, bottom: str, what: str, target: str, limit: float) -> str:
    """`top/bottom` as median, fastest and CPU-seconds ratios, and whether the median meets the target."""
    keys = {"epoch": "epoch_seconds", "process": "process_seconds"}[what]
    above, below = summary[top], summary[bottom]
    median = above[keys] / below[keys]
    fastest = above[f"fastest_{keys}"] / below[f"fastest_{keys}"]
    cpu = above[keys.replace("_seconds", "_cpu_seconds")] / below[keys.replace("_seconds", "_cpu_seconds")]
    verdict = "met" if median <= limit else "NOT met"
    return (
        f"{what == 'epoch' and 'per epoch' or 'whole process'} {top}/{bottom} = {median:.2f} median, {fastest:.2f}"
        f" fastest, {cpu:.2f} in CPU seconds (target {target}: {verdict})"
    )


def keras_lines(summary: dict, runs: list[dict]) -> list[str]:
    """The whole default fit against the tutorial's Keras program: wall and CPU seconds, with the issue's targets."""
    a, d = summary["a"], summary["d"]
    wall = a["process_seconds"] / d["process_seconds"]
    cpu = a["process_cpu_seconds"] / d["process_cpu_seconds"]
    # each round's a/d: the two ran one after the other, so a disturbance of the machine hits both
    pairs = [x["process_seconds"] / y["process_seconds"] for x, y in zip(*(rounds(runs, w) for w in "ad"), strict=True)]
    verdicts = [
        "met" if ratio <= limit else "NOT met"
        for ratio, limit in ((wall, MAX_KERAS_WALL_RATIO), (cpu, MAX_KERAS_CPU_RATIO))
    ]
    return [
        f"whole process a/d = {wall:.2f} median, {a['fastest_process_seconds'] / d['fastest_process_seconds']:.2f}"
        f" fastest, {statistics.median(pairs):.2f} median of the rounds' pairs (target <= {MAX_KERAS_WALL_RATIO}:"
        f" {verdicts[0]})",
        f"whole process CPU seconds a/d = {cpu:.2f} median (target <= {MAX_KERAS_CPU_RATIO}: {verdicts[1]})",
    ]


def rounds(runs: list[dict], which: str) -> list[dict]:
    return [r for r in runs if r["which"] == which]


def phase_table(summary: dict) -> list[str]:
    """Each process split into its phases (medians): wall seconds, CPU seconds in brackets."""
    lines = [
        "| run | " + " | ".join(PHASES) + " | whole process |",
        "| --- |" + " ---: |" * (len(PHASES) + 1),
    ]
    for which, row in summary.items():
        cells = [f"{row['phases'][p]['seconds']:.2f} ({row['phases'][p]['cpu_seconds']:.2f})" for p in PHASES]
        whole = f"{row['process_seconds']:.2f} ({row['process_cpu_seconds']:.2f})"
        lines.append(f"| {NAMES[which].split(' ', 1)[0]} | " + " | ".join(cells) + f" | {whole} |")
    return lines


def table(summary: dict, runs: list[dict], args: argparse.Namespace) -> str:
    threads = f"OMP_NUM_THREADS={args.threads}" if args.threads else f"its default threads ({os.cpu_count()} CPUs)"
    lines = [
        f"Bundled MNIST, batch 32, {args.epochs} epoch(s){f', {args.limit} batches an epoch' if args.limit else ''},"
        f" seed {args.seed}, {args.repeats} alternating round(s), torch with {threads}: median (fastest).",
        f"Command: `{' '.join(['python -m benchmarks.bench', *args.argv])}`; load average {args.load:.2f} at the"
        f" start, {args.load_end:.2f} at the end, on {os.cpu_count()} CPUs.",
        "",
        "| run | s/epoch (training) | CPU s/epoch | whole process s | process CPU s | peak memory MB"
        " | test accuracy % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for which, row in summary.items():
        lines.append(
            f"| {NAMES[which]} | {row['epoch_seconds']:.2f} ({row['fastest_epoch_seconds']:.2f})"
            f" | {row['epoch_cpu_seconds']:.2f} | {row['process_seconds']:.1f} ({row['fastest_process_seconds']:.1f})"
            f" | {row['process_cpu_seconds']:.1f} | {row['peak_rss_mb']:.0f} | {100 * row['test_acc']:.2f} |"
        )
    checks = []
    if "a" in summary and "c" in summary:
        checks.append(ratio_line(summary, "a", "c", "epoch", f"<= {MAX_EPOCH_RATIO}", MAX_EPOCH_RATIO))
        checks.append(ratio_line(summary, "a", "c", "process", f"<= {MAX_PROCESS_RATIO}", MAX_PROCESS_RATIO))
    if "a" in summary:
        peak = summary["a"]["peak_rss_mb"]
        verdict = "met" if peak < MAX_PEAK_MB else "NOT met"
        checks.append(f"peak memory of a = {peak:.0f} MB (target < {MAX_PEAK_MB} MB: {verdict})")
    if "a" in summary and "c" in summary:
        gap = 100 * abs(summary["a"]["test_acc"] - summary["c"]["test_acc"])
        verdict = "met" if gap <= MAX_ACC_GAP else "NOT met"
        checks.append(f"accuracy |a - c| = {gap:.2f} points (target: unchanged, <= {MAX_ACC_GAP}: {verdict})")
    if "a" in summary and "d" in summary:
        checks.extend(keras_lines(summary, runs))
    if "b" in summary and "a" in summary:
        ratio = summary["b"]["process_seconds"] / summary["a"]["process_seconds"]
        checks.append(f"for reference, whole process b/a = {ratio:.1f}x (no target)")
    phases_intro = [
        "",
        "Each process by phase, median wall seconds (CPU seconds): imports (and the CLI's argument parsing), set-up"
        " (data read, model and Trainer built), training, test, pictures, shutdown (from `atexit` to the end):",
        "",
    ]
    return "\n".join([*lines, "", *[f"- {check}" for check in checks], *phases_intro, *phase_table(summary)]) + "\n"


def keras_interpreter(asked: str | None) -> tuple[str | None, str]:
    """The interpreter for (d) and, when there is none, the line that says why and how to add it."""
    python = asked or sys.executable
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorflow') is None)"
    try:
        found = subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        found = False
    if found:
        return python, ""
    how = (
        "pip install -e '.[keras]' (tensorflow-cpu) in this environment, or give --keras_python PATH, the python of"
        " a virtual environment with tensorflow-cpu and numpy"
    )
    return None, f"{python} cannot import tensorflow: the tutorial's Keras program (d) needs it. To add (d): {how}."


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians and minima over them")
    parser.add_argument("--only", default="a,b,c,d", help="which runs, e.g. a,c (d only where tensorflow imports)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="training batches an epoch, for tiny runs")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--out_dir", default="runs/bench")
    parser.add_argument(
        "--threads", type=int, default=1, help="OMP_NUM_THREADS for (a), (b), (c) alike (1: the CLI's own default)"
    )
    parser.add_argument(
        "--keras_python",
        default=None,
        help="python of an environment with tensorflow-cpu, for (d) (default: this one, if it imports tensorflow)",
    )
    args = parser.parse_args(argv)
    args.argv, args.load = argv, os.getloadavg()[0]
    order = [w.strip() for w in args.only.split(",") if w.strip()]
    if not order or any(w not in NAMES for w in order):
        parser.error(f"--only {args.only!r}: give a comma-separated subset of {','.join(NAMES)}")
    if min(args.epochs, args.repeats, args.limit or 1, args.threads or 1) < 1:
        parser.error("--epochs, --repeats, --limit and --threads must be at least 1")
    if "d" in order:
        asked = args.keras_python
        args.keras_python, why_not = keras_interpreter(asked)
        if args.keras_python is None:
            if asked or args.only != parser.get_default("only"):
                parser.error(why_not)
            print(f"(d) left out: {why_not}", file=sys.stderr, flush=True)
            order.remove("d")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(args.out_dir)
    runs = []
    for repeat in range(args.repeats):
        for which in order:
            print(f"round {repeat + 1}/{args.repeats}: {NAMES[which]} ...", file=sys.stderr, flush=True)
            runs.append(run_one(which, args, out_dir / stamp / f"{which}{repeat}"))
    args.load_end = os.getloadavg()[0]
    summary = summarize(runs, order)
    markdown = table(summary, runs, args)
    raw = {"time": stamp, "args": {k: v for k, v in vars(args).items()}, "runs": runs, "summary": summary}
    (out_dir / f"{stamp}.json").write_text(json.dumps(raw, indent=2) + "\n")
    (out_dir / "latest.md").write_text(markdown)
    print(markdown)
    defaults = vars(parser.parse_args([]))
    if all(getattr(args, name) == defaults[name] for name in defaults if name not in ("keras_python", "out_dir")):
        page = docs_tables.write_stamped("bench", "make bench", docs_tables.load_average() + " at the end", markdown)
        print(f"Written: the table into {page}")


if __name__ == "__main__":
    main()
