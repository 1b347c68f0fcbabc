"""What each per-step cost of `python -m mnist_dense fit` is worth: A/B runs, alternating, seconds per epoch.

Each variant is `python -m mnist_dense fit` with one thing changed, run as its own process:

  default        as a user runs it (TQDM bar redrawn every 20 steps, Adam's default implementation)
  bar1           the bar redrawn every step (Lightning's own default)
  bar_off        --trainer.enable_progress_bar false
  foreach        Adam(foreach=True)                             (subclass `ForeachAdamClassifier`)
  fused          Adam(fused=True)                               (subclass `FusedAdamClassifier`)
  log_steps      self.log(train loss and accuracy, on_step=False, on_epoch=True) every step
                 instead of once an epoch                       (subclass `PerStepLogClassifier`)
  no_metrics     no training loss or accuracy at all, as the plain loop (subclass `NoTrainMetricsClassifier`)
  no_nvml        PYTORCH_NVML_BASED_CUDA_CHECK unset where no NVML library loads (`skip_nvml_check_without_nvml`)
  fused_no_nvml  both of the last two
  one_thread     OMP_NUM_THREADS=1 in the environment (meaningless with --threads)

The variants that need another LightningModule run the package's own CLI with that class in place of
`MNISTClassifier` (`python -m benchmarks.step_costs --as CLASS fit ...`): `main()` passes
`MNISTClassifier` without subclass mode, so `--model CLASS` is refused. Every variant goes through
that same entry point, so all pay the same imports. The order is v1, v2, ..., v1, v2, ... for
`--repeats` rounds; reported: median and fastest training seconds per epoch (`EpochTimer`), CPU
seconds per epoch, whole process seconds and CPU seconds, and each variant's difference from `default`.
On a machine shared with other jobs give `--threads 1`: torch's threads spinning for a core swamp
every other cost (and the CPU seconds are then the work done).

`python -m benchmarks.step_costs --imports` instead times the start-up imports (`python -X importtime`)
of `python -m mnist_dense fit --help`: the total, and who imports the heavy packages.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.baselines import RESULT_PREFIX
from mnist_dense.module import MNISTClassifier

RESULT_LINE = re.compile(re.escape(RESULT_PREFIX) + r"(\{.*\})")
BAR = "--trainer.callbacks+=TQDMProgressBar"


class ForeachAdamClassifier(MNISTClassifier):
    """Adam with `foreach=True`: one multi-tensor kernel per update instead of a loop over the 4 parameters."""

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, foreach=True)


class FusedAdamClassifier(MNISTClassifier):
    """Adam with `fused=True` (a CPU kernel since torch 2.4)."""

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, fused=True)


class PerStepLogClassifier(MNISTClassifier):
    """The training metrics logged every step (`on_step=False, on_epoch=True`), as most ports do."""

    def training_step(self, batch, batch_idx: int):
        loss = self.shared_step(batch, "train")
        self.log("train_loss", self.train_loss, on_step=False, on_epoch=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
        pass  # already logged


class NoTrainMetricsClassifier(MNISTClassifier):
    """No training loss or accuracy at all (what the plain loop computes): the price of the metric updates."""

    def training_step(self, batch, batch_idx: int):
        images, labels = batch
        return F.cross_entropy(self(images), labels)

    def on_train_epoch_end(self) -> None:
        pass


def skip_nvml_check_without_nvml() -> None:
    """`import lightning` sets PYTORCH_NVML_BASED_CUDA_CHECK=1, so that `torch.cuda.is_available()` asks NVML
    instead of initializing CUDA. torch 2.14's `Adam.step` calls it every step, and where no NVML library is
    installed (a CUDA build of torch on a machine without a GPU) each call fails to dlopen it, then falls back to
    `cudaGetDeviceCount` anyway. Without NVML the variable changes nothing but that cost, so unset it."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


MODULE = "mnist_dense.module.MNISTClassifier"
HERE = "benchmarks.step_costs."
# name: (LightningModule class, extra fit flags, extra environment, unset the NVML check)
VARIANTS: dict[str, tuple[str, list[str], dict[str, str], bool]] = {
    "default": (MODULE, [], {}, False),
    "bar1": (MODULE, [BAR, "--trainer.callbacks.refresh_rate", "1"], {}, False),
    "bar_off": (MODULE, ["--trainer.enable_progress_bar", "false"], {}, False),
    "foreach": (HERE + "ForeachAdamClassifier", [], {}, False),
    "fused": (HERE + "FusedAdamClassifier", [], {}, False),
    "log_steps": (HERE + "PerStepLogClassifier", [], {}, False),
    "no_metrics": (HERE + "NoTrainMetricsClassifier", [], {}, False),
    "no_nvml": (MODULE, [], {}, True),
    "fused_no_nvml": (HERE + "FusedAdamClassifier", [], {}, True),
    "one_thread": (MODULE, [], {"OMP_NUM_THREADS": "1"}, False),
}


def run_as(class_path: str, args: list[str]) -> None:
    """The package's CLI with another LightningModule class in place of `MNISTClassifier`."""
    from mnist_dense import cli

    if args[:1] == ["--no_nvml"]:
        skip_nvml_check_without_nvml()
        args = args[1:]
    module, _, name = class_path.rpartition(".")
    cli.MNISTClassifier = getattr(importlib.import_module(module), name)
    cli.main(args)


def run_variant(name: str, args: argparse.Namespace, run_dir: Path) -> dict:
    class_path, flags, env, no_nvml = VARIANTS[name]
    command = [sys.executable, "-m", "benchmarks.step_costs", "--as", class_path, *(["--no_nvml"] if no_nvml else [])]
    command += ["fit"]
    command += ["--seed_everything", str(args.seed), "--trainer.max_epochs", str(args.epochs)]
    command += ["--trainer.default_root_dir", str(run_dir), "--data.data_dir", args.data_dir]
    command += ["--test_after_fit", "false", "--trainer.callbacks+=benchmarks.baselines.EpochTimer", *flags]
    if args.limit:
        command += ["--trainer.limit_train_batches", str(args.limit)]
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    start = time.perf_counter()
    with open(run_dir / "output.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **threads, **env})
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    output = (run_dir / "output.log").read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        tail = "\n".join(output.splitlines()[-15:])
        raise SystemExit(f"error: variant {name} failed; its output ({run_dir / 'output.log'}) ends:\n{tail}")
    results = [json.loads(found) for found in RESULT_LINE.findall(output)]
    return {
        "name": name,
        "epoch_seconds": [r["train_seconds"] for r in results],
        "epoch_cpu_seconds": [r["train_cpu_seconds"] for r in results],
        "process_seconds": seconds,
        "process_cpu_seconds": usage.ru_utime + usage.ru_stime,
    }


HEAVY_IMPORTS = ("torch", "lightning", "torchvision", "torch._dynamo", "matplotlib.pyplot", "sympy")


def import_times() -> str:
    """`python -X importtime -m mnist_dense fit --help`: the total, each heavy package and who first imported it."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mnist_dense", "fit", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []  # (own microseconds, cumulative microseconds, depth, module), children listed before their parent
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            rows.append((int(match.group(1)), int(match.group(2)), len(match.group(3)) // 2, match.group(4)))
    total = sum(cumulative for _, cumulative, depth, _ in rows if depth == 0)
    lines = [f"start-up imports of `python -m mnist_dense fit --help`: {total / 1e6:.2f} s (python -X importtime)"]
    for index, (_, cumulative, depth, name) in enumerate(rows):
        if name not in HEAVY_IMPORTS:
            continue
        importers = []
        for _, _, later_depth, later_name in rows[index + 1 :]:
            if later_depth < depth:
                importers.append(later_name)
                depth = later_depth
        lines.append(f"  {cumulative / 1e6:5.2f} s  {name}, imported by {' <- '.join(importers[:4]) or '-'}")
    own = sum(own for own, _, _, name in rows if name.split(".")[0] == "mnist_dense")
    lines.append(f"  {own / 1e6:5.2f} s  mnist_dense's own modules (their own time, dependencies excluded)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--as"]:
        run_as(argv[1], argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(VARIANTS), help=f"comma-separated, from {','.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="training batches an epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS for every variant (unset: torch's default)"
    )
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--out_dir", default="runs/step_costs")
    parser.add_argument("--imports", action="store_true", help="time the start-up imports instead")
    args = parser.parse_args(argv)
    if args.imports:
        print(import_times())
        return
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if not names or any(n not in VARIANTS for n in names):
        parser.error(f"--only {args.only!r}: choose from {','.join(VARIANTS)}")
    print(f"load average at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    runs = []
    for repeat in range(args.repeats):
        for name in names:
            run = run_variant(name, args, Path(args.out_dir) / f"{name}{repeat}")
            epochs = " ".join(f"{s:.2f}" for s in run["epoch_seconds"])
            print(
                f"round {repeat + 1}: {name:<14} {epochs} s/epoch, process {run['process_seconds']:.1f} s", flush=True
            )
            runs.append(run)
    print(report(runs, names))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def report(runs: list[dict], names: list[str]) -> str:
    """Median (fastest) seconds and CPU seconds per epoch and per process, and each one's difference from default."""
    rows = {}
    for name in names:
        mine = [r for r in runs if r["name"] == name]
        rows[name] = {
            "epoch": statistics.median(statistics.median(r["epoch_seconds"]) for r in mine),
            "fastest": min(min(r["epoch_seconds"]) for r in mine),
            "cpu": statistics.median(statistics.median(r["epoch_cpu_seconds"]) for r in mine),
            "process": statistics.median(r["process_seconds"] for r in mine),
            "process_cpu": statistics.median(r["process_cpu_seconds"] for r in mine),
        }
    base = rows.get("default")
    lines = [
        "| variant | s/epoch median (fastest) | CPU s/epoch | vs default: s/epoch median, fastest, CPU"
        " | process s | process CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        delta = "-"
        if base is not None and name != "default":
            delta = (
                f"{row['epoch'] - base['epoch']:+.2f}, {row['fastest'] - base['fastest']:+.2f},"
                f" {row['cpu'] - base['cpu']:+.2f}"
            )
        lines.append(
            f"| {name} | {row['epoch']:.2f} ({row['fastest']:.2f}) | {row['cpu']:.2f} | {delta}"
            f" | {row['process']:.1f} | {row['process_cpu']:.1f} |"
        )
    return "\n" + "\n".join(lines)


if __name__ == "__main__":
    main()
