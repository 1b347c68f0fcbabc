"""What each per-step cost of `python -m mnist_dense fit` is worth: A/B runs, alternating, seconds per epoch.

Each variant is `python -m mnist_dense fit` with one thing changed, run as its own process:

  default        as a user runs it (the package's bar, redrawn every 20 steps in a terminal, into the log file
                 only its epoch lines; Adam's default implementation)
  bar1           Lightning's TQDM bar redrawn every step (Lightning's own default), frames into the log file
  bar_off        --trainer.enable_progress_bar false
  foreach        Adam(foreach=True)                             (subclass `ForeachAdamClassifier`)
  forloop        Adam's for-loop, torch's CPU default, instead of the package's fused=True
                                                                (subclass `ForLoopAdamClassifier`)
  log_steps      self.log(train loss and accuracy, on_step=False, on_epoch=True) every step
                 instead of once an epoch                       (subclass `PerStepLogClassifier`)
  no_metrics     no training loss or accuracy at all, as the plain loop (subclass `NoTrainMetricsClassifier`)
  torch_threads  --threads N, torch's own count (the others: the CLI's default, 1 for the dense network, or
                 --threads)

The variants that need another LightningModule run the package's own CLI with that class in place of
`MNISTClassifier` (`python -m benchmarks.step_costs --as CLASS fit ...`): `main()` passes
`MNISTClassifier` without subclass mode, so `--model CLASS` is refused. Every variant goes through
that same entry point, so all pay the same imports. The order is v1, v2, ..., v1, v2, ... for
`--repeats` rounds; reported: median and fastest training seconds per epoch (`EpochTimer`), CPU
seconds per epoch, whole process seconds and CPU seconds, and each variant's difference from `default`.
On a machine shared with other jobs give `--threads 1`: torch's threads spinning for a core swamp
every other cost (and the CPU seconds are then the work done).

Whole epochs one after the other are at the mercy of a busy machine (differences of 0.3-0.5 s an epoch
drown in it). `--interleaved` measures the small ones more surely: one fit per factor, in this process,
the factor switched on and off every 50 steps (`Interleave`), the median step time under each; factors
bar_off, bar1, running_figures (the package's bar, drawn as in a terminal: off, every step, without its running
loss and accuracy), log_steps, no_metrics, foreach, fused (switched in the optimizer's param_groups),
nvml (Lightning's PYTORCH_NVML_BASED_CUDA_CHECK=1 against the CLI's `skip_failing_nvml_check`), threads
(the CLI's count, 1 for the dense network, against the other: torch's own, or 1) and, for the conv networks,
contiguous (their channels-last layout against PyTorch's default NCHW, weights and Adam's moments
converted at each switch). `--net CLASS` trains `mnist_dense.model.CLASS` instead of the DenseNet.
`--in_process` runs the variants as above but in this process (no start-up).

`--eval_batches 100,250,1000` times evaluation instead: `test` on the 10,000 test images (`trainer.test`
with `--data.eval_batch_size` N) and one pass of `mnist_dense.shift` over them in batches of N, the batch
sizes alternating for `--repeats` rounds; the median seconds of each.

`python -m benchmarks.step_costs --imports` instead times the start-up imports (`python -X importtime`)
of `python -m mnist_dense fit --help`: the total, and who imports the heavy packages.

    python -m benchmarks.step_costs --threads 1                  # every variant, 3 rounds: about 8 minutes
    python -m benchmarks.step_costs --threads 1 --interleaved    # 9 factors, one epoch each: about 1 minute
    python -m benchmarks.step_costs --imports
    python -m benchmarks.step_costs --interleaved --net GlobalPoolConvNet --only threads,contiguous --limit 1000
    python -m benchmarks.step_costs --eval_batches 100,250,1000 --net GlobalPoolConvNet
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import TQDMProgressBar

from benchmarks import docs_tables
from benchmarks.baselines import RESULT_PREFIX, result_lines, run_child
from mnist_dense.callbacks import KerasProgressBar
from mnist_dense.constants import KERAS_ADAM_EPS
from mnist_dense.module import MNISTClassifier
from mnist_dense.runtime import skip_failing_nvml_check

BAR = "--trainer.callbacks+=TQDMProgressBar"
STEPS_PER_EPOCH = 1875  # the default: all 60,000 training images at batch 32


class ForeachAdamClassifier(MNISTClassifier):
    """Adam with `foreach=True`: one multi-tensor kernel per update, instead of the package's fused kernel."""

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, eps=KERAS_ADAM_EPS, foreach=True)


class ForLoopAdamClassifier(MNISTClassifier):
    """Adam as torch runs it by default on the CPU, a loop over the parameters: not the package's fused kernel."""

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, eps=KERAS_ADAM_EPS, foreach=False, fused=False)


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


class ToggleClassifier(MNISTClassifier):
    """`MNISTClassifier` whose training step can log every step or skip its metrics, switched by `Interleave`."""

    log_every_step = False
    update_metrics = True

    def training_step(self, batch, batch_idx: int):
        if not self.update_metrics:
            images, labels = batch
            return F.cross_entropy(self(images), labels)
        loss = self.shared_step(batch, "train")
        if self.log_every_step:  # other names than the epoch's own `train_loss`, `train_acc`: the same cost per call
            self.log("train_loss_per_step", self.train_loss, on_step=False, on_epoch=True)
            self.log("train_acc_per_step", self.train_acc, on_step=False, on_epoch=True)
        return loss


class SwitchableBar(KerasProgressBar):
    """The package's bar, drawn as in a terminal (into the log file), whose refresh rate and running figures
    `Interleave` switches (TQDMProgressBar reads the public `refresh_rate` property)."""

    def __init__(self, refresh_rate: int = 20) -> None:
        super().__init__(refresh_rate=refresh_rate, frames=True)
        self.rate = refresh_rate
        self.running_figures = True

    @property
    def refresh_rate(self) -> int:
        return self.rate

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        if self.running_figures:
            return super().get_metrics(trainer, pl_module)
        return TQDMProgressBar.get_metrics(self, trainer, pl_module)  # Lightning's own: the logger's version only


# factor: (what mode 0 is, what mode 1 is)
FACTORS = {
    "bar_off": ("bar every 20 steps", "bar off"),
    "bar1": ("bar every 20 steps", "bar every step"),
    "running_figures": ("bar shows the running loss and accuracy", "bar shows Lightning's figures (v_num)"),
    "log_steps": ("metrics logged once an epoch", "2 self.log calls every step"),
    "no_metrics": ("metric updates every step", "no training metrics"),
    "foreach": ("Adam fused=True", "Adam foreach=True"),
    "fused": ("Adam fused=True", "Adam for-loop (torch's default on the CPU)"),
    "nvml": ("NVML check only where NVML loads (the CLI)", "PYTORCH_NVML_BASED_CUDA_CHECK=1 (Lightning's)"),
    "threads": ("the CLI's threads (1 for the dense net)", "the other count (1, or torch's own)"),
    "contiguous": ("conv net in channels-last layout", "conv net NCHW-contiguous"),
}
DEFAULT_THREADS = torch.get_num_threads()


def set_memory_format(trainer: L.Trainer, net: torch.nn.Module, memory_format: torch.memory_format) -> None:
    """The conv net's weights, its input and Adam's moments in one layout (channels-last or NCHW-contiguous)."""
    if not hasattr(net, "features_of"):
        raise SystemExit("error: the contiguous factor needs a conv net: --net ClassicConvNet or GlobalPoolConvNet")
    net.to(memory_format=memory_format)
    net.features_of = lambda images: net.features(images.contiguous(memory_format=memory_format))
    for state in trainer.optimizers[0].state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() == 4:
                state[key] = value.contiguous(memory_format=memory_format)


class Interleave(L.Callback):
    """Switches one factor on and off every `block` steps of one fit and times every step under each.

    A step is timed from one `on_train_batch_end` to the next, so it holds everything Lightning does per batch. The
    first two steps after each switch are not counted. Medians per step resist a busy machine far better than
    whole epochs run one after the other; the process's CPU time per step (beside the wall clock) resists it best:
    time spent waiting for a core is not in it.
    """

    def __init__(self, factor: str = "bar_off", block: int = 50) -> None:
        if factor not in FACTORS:
            raise ValueError(f"Interleave(factor={factor!r}): choose from {', '.join(FACTORS)}")
        self.factor, self.block = factor, block
        self.times: dict[int, list[float]] = {0: [], 1: []}
        self.cpu_times: dict[int, list[float]] = {0: [], 1: []}
        self._last: float | None = None
        self._cpu_last = 0.0
        self._mode = 0
        self.cli_threads = 0

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule, mode: int) -> None:
        factor = self.factor
        if factor in ("bar_off", "bar1", "running_figures"):
            bar = trainer.progress_bar_callback
            if not isinstance(bar, SwitchableBar):
                raise SystemExit("error: the bar factors need --trainer.callbacks+=benchmarks.step_costs.SwitchableBar")
            if factor == "bar_off":
                bar.disable() if mode else bar.enable()
            elif factor == "bar1":
                bar.rate = 1 if mode else 20
            else:
                bar.running_figures = not mode
        elif factor == "log_steps":
            pl_module.log_every_step = bool(mode)
        elif factor == "no_metrics":
            pl_module.update_metrics = not mode
        elif factor in ("foreach", "fused"):  # the package's choice of Adam (`fused_adam`), or the other one
            for group in trainer.optimizers[0].param_groups:
                group["fused"] = None if mode else pl_module.fused_adam()
                group["foreach"] = True if mode and factor == "foreach" else None
        elif factor == "nvml":
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
            if not mode:
                skip_failing_nvml_check()
        elif factor == "threads":
            self.cli_threads = self.cli_threads or torch.get_num_threads()  # first switch: before any change
            other = 1 if self.cli_threads > 1 else DEFAULT_THREADS
            torch.set_num_threads(other if mode else self.cli_threads)
        elif factor == "contiguous":
            set_memory_format(trainer, pl_module.net, torch.contiguous_format if mode else torch.channels_last)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        mode = (batch_idx // self.block) % 2
        if mode != self._mode or batch_idx == 0:
            self._apply(trainer, pl_module, mode)
            self._mode, self._since_switch = mode, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now, cpu_now = time.perf_counter(), time.process_time()
        if self._last is not None and self._since_switch >= 2:
            self.times[self._mode].append(now - self._last)
            self.cpu_times[self._mode].append(cpu_now - self._cpu_last)
        self._last, self._cpu_last, self._since_switch = now, cpu_now, self._since_switch + 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer, pl_module, 0)
        self._last = None
        off, on = (statistics.median(self.times[m]) * 1e3 for m in (0, 1))
        # A mean: work done once every 20 steps (a redraw) lies in one step of 20, which a median leaves out.
        cpu = [statistics.mean(self.cpu_times[m]) * 1e3 for m in (0, 1)]
        result = {"factor": self.factor, "ms_per_step": [off, on], "cpu_ms_per_step": cpu,
                  "steps": [len(self.times[0]), len(self.times[1])]}  # fmt: skip
        print(f"\n{RESULT_PREFIX}{json.dumps(result)}", flush=True)


def interleaved(factors: list[str], args: argparse.Namespace) -> str:
    """One fit per factor, in this process, the factor switched every 50 steps; the median step under each."""
    lightning_log = logging.getLogger("lightning.pytorch")  # its handler writes to the terminal
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)
    try:
        return _interleaved(factors, args)
    finally:
        lightning_log.setLevel(level)


def _interleaved(factors: list[str], args: argparse.Namespace) -> str:
    from contextlib import redirect_stderr, redirect_stdout

    lines = [
        "| factor | median ms/step: as the package is | the other way | difference ms/step"
        f" | s/epoch ({STEPS_PER_EPOCH:,} steps) | difference in CPU ms/step (mean) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for factor in factors:
        run_dir = Path(args.out_dir) / f"interleaved_{factor}"
        run_dir.mkdir(parents=True, exist_ok=True)
        fit = ["fit", "--seed_everything", str(args.seed), "--trainer.max_epochs", "1", "--test_after_fit", "false"]
        fit += ["--trainer.default_root_dir", str(run_dir), "--data.data_dir", args.data_dir]
        fit += ["--trainer.callbacks+=benchmarks.step_costs.SwitchableBar"]
        fit += ["--trainer.callbacks+=benchmarks.step_costs.Interleave", "--trainer.callbacks.factor", factor]
        fit += ["--trainer.limit_train_batches", str(args.limit)] if args.limit else []
        fit += ["--threads", str(args.threads)] if args.threads else []
        fit += net_flags(args)
        with open(run_dir / "output.log", "w") as log, redirect_stdout(log), redirect_stderr(log):
            run_as(HERE + "ToggleClassifier", fit)
        (result,) = result_lines((run_dir / "output.log").read_text())
        package, other = result["ms_per_step"]
        cpu_package, cpu_other = result["cpu_ms_per_step"]
        names = FACTORS[factor]
        lines.append(
            f"| {factor}: {names[0]} / {names[1]} | {package:.3f} | {other:.3f} | {other - package:+.3f}"
            f" | {(other - package) * STEPS_PER_EPOCH / 1e3:+.2f} | {cpu_other - cpu_package:+.3f} |"
        )
    return "\n".join(lines)


MODULE = "mnist_dense.module.MNISTClassifier"
HERE = "benchmarks.step_costs."
# name: (LightningModule class, extra fit flags, extra environment)
VARIANTS: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "default": (MODULE, [], {}),
    "bar1": (MODULE, [BAR, "--trainer.callbacks.refresh_rate", "1"], {}),
    "bar_off": (MODULE, ["--trainer.enable_progress_bar", "false"], {}),
    "foreach": (HERE + "ForeachAdamClassifier", [], {}),
    "forloop": (HERE + "ForLoopAdamClassifier", [], {}),
    "log_steps": (HERE + "PerStepLogClassifier", [], {}),
    "no_metrics": (HERE + "NoTrainMetricsClassifier", [], {}),
    "torch_threads": (MODULE, ["--threads", str(DEFAULT_THREADS)], {}),
}


def run_as(class_path: str, args: list[str]) -> None:
    """The package's CLI with another LightningModule class in place of `MNISTClassifier`."""
    from mnist_dense import cli, commands

    module, _, name = class_path.rpartition(".")
    cli.MNISTClassifier = getattr(importlib.import_module(module), name)
    try:
        commands.main(args)
    finally:
        cli.MNISTClassifier = MNISTClassifier


def run_variant(name: str, args: argparse.Namespace, run_dir: Path) -> dict:
    class_path, flags, env = VARIANTS[name]
    command = [sys.executable, "-m", "benchmarks.step_costs", "--as", class_path, "fit"]
    command += ["--seed_everything", str(args.seed), "--trainer.max_epochs", str(args.epochs)]
    command += ["--trainer.default_root_dir", str(run_dir), "--data.data_dir", args.data_dir]
    command += ["--test_after_fit", "false", "--trainer.callbacks+=benchmarks.baselines.EpochTimer", *flags]
    if args.limit:
        command += ["--trainer.limit_train_batches", str(args.limit)]
    command += net_flags(args)
    threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    output, seconds, usage = run_child(command, run_dir / "output.log", {**os.environ, **threads, **env})
    results = result_lines(output)
    return {
        "name": name,
        "epoch_seconds": [r["train_seconds"] for r in results],
        "epoch_cpu_seconds": [r["train_cpu_seconds"] for r in results],
        "process_seconds": seconds,
        "process_cpu_seconds": usage.ru_utime + usage.ru_stime,
    }


def net_flags(args: argparse.Namespace) -> list[str]:
    return ["--model.net", f"mnist_dense.model.{args.net}"] if args.net else []


def eval_batches(sizes: list[int], args: argparse.Namespace) -> str:
    """`test` and one shift pass over the 10,000 test images at each batch size, alternating; median seconds."""
    from mnist_dense.data import MNISTDataModule, load_split
    from mnist_dense.model import NETWORKS
    from mnist_dense.shift import accuracy

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = MNISTClassifier(net=NETWORKS[args.net]() if args.net else None).eval()
    images, labels = load_split(args.data_dir, "test")
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    times: dict[int, dict[str, list[float]]] = {size: {"test": [], "shift": []} for size in sizes}
    for _ in range(args.repeats):
        for size in sizes:
            start = time.perf_counter()
            trainer.test(model, MNISTDataModule(args.data_dir, eval_batch_size=size), verbose=False)
            middle = time.perf_counter()
            accuracy(model, images, labels, "unit", batch_size=size)
            times[size]["test"].append(middle - start)
            times[size]["shift"].append(time.perf_counter() - middle)
    name = args.net or "DenseNet"
    lines = [
        f"| {name}: batch size | test, 10,000 images (s) | one shift pass, 10,000 images (s) |",
        "| ---: | ---: | ---: |",
    ]
    for size, measured in times.items():
        lines.append(
            f"| {size} | {statistics.median(measured['test']):.2f} | {statistics.median(measured['shift']):.2f} |"
        )
    return "\n".join(lines)


HEAVY_IMPORTS = ("torch", "lightning", "torchvision", "torch._dynamo", "matplotlib.pyplot", "sympy")


def run_in_process(name: str, args: argparse.Namespace, run_dir: Path) -> dict:
    """The same fit as `run_variant`, in this process: no start-up, so the noise of a busy machine is smaller."""
    from contextlib import redirect_stderr, redirect_stdout

    class_path, flags, env = VARIANTS[name]
    if env:
        raise SystemExit(f"error: variant {name} changes the environment; it needs a process of its own")
    fit = ["fit", "--seed_everything", str(args.seed), "--trainer.max_epochs", str(args.epochs)]
    fit += ["--trainer.default_root_dir", str(run_dir), "--data.data_dir", args.data_dir]
    fit += ["--threads", str(args.threads)] if args.threads else []  # before the variant's own flags
    fit += ["--test_after_fit", "false", "--trainer.callbacks+=benchmarks.baselines.EpochTimer", *flags]
    fit += ["--trainer.limit_train_batches", str(args.limit)] if args.limit else []
    fit += net_flags(args)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir / "output.log", "w") as log, redirect_stdout(log), redirect_stderr(log):
        run_as(class_path, fit)
    seconds = time.perf_counter() - start
    results = result_lines((run_dir / "output.log").read_text())
    return {
        "name": name,
        "epoch_seconds": [r["train_seconds"] for r in results],
        "epoch_cpu_seconds": [r["train_cpu_seconds"] for r in results],
        "process_seconds": seconds,  # the fit only, in this mode
        "process_cpu_seconds": float("nan"),
    }


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
    parser.add_argument("--net", choices=("DenseNet", "ClassicConvNet", "GlobalPoolConvNet"), help="network to train")
    parser.add_argument("--eval_batches", help="comma-separated evaluation batch sizes to time instead")
    parser.add_argument(
        "--interleaved",
        action="store_true",
        help=f"switch each factor of --only ({','.join(FACTORS)}) every 50 steps of one in-process fit",
    )
    parser.add_argument(
        "--in_process",
        action="store_true",
        help="run every fit in this process (after one warm-up fit): less noise, no start-up",
    )
    parser.add_argument(
        "--write_docs",
        choices=[name for name, (_, command) in docs_tables.BLOCKS.items() if "benchmarks.step_costs" in command],
        help="also write the table into the docs' block of this name (benchmarks/docs_tables.py)",
    )
    args = parser.parse_args(argv)
    if args.imports:
        print(import_times())
        return
    if args.eval_batches:
        print(f"load average at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
        table = eval_batches([int(size) for size in args.eval_batches.split(",")], args)
        print(table)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        write_docs(args.write_docs, table, argv)
        return
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if args.interleaved:
        names = [n for n in names if n in FACTORS] if args.only == parser.get_default("only") else names
        if not names or any(n not in FACTORS for n in names):
            parser.error(f"--only {args.only!r}: with --interleaved choose from {','.join(FACTORS)}")
        print(f"load average at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
        table = interleaved(names, args)
        print(table)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        write_docs(args.write_docs, table, argv)
        return
    if not names or any(n not in VARIANTS for n in names):
        parser.error(f"--only {args.only!r}: choose from {','.join(VARIANTS)}")
    print(f"load average at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    runs = []
    run_one = run_variant
    if args.in_process:
        run_one = run_in_process
        run_in_process(names[0], args, Path(args.out_dir) / "warm_up")
    for repeat in range(args.repeats):
        for name in names:
            run = run_one(name, args, Path(args.out_dir) / f"{name}{repeat}")
            epochs = " ".join(f"{s:.2f}" for s in run["epoch_seconds"])
            print(
                f"round {repeat + 1}: {name:<14} {epochs} s/epoch, process {run['process_seconds']:.1f} s", flush=True
            )
            runs.append(run)
    print(report(runs, names))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def write_docs(block: str | None, table: str, argv: list[str]) -> None:
    if block:
        command = " ".join(["python -m benchmarks.step_costs", *argv])
        page = docs_tables.write_stamped(block, command, docs_tables.load_average() + " at the end", table)
        print(f"Written: the table into {page}")


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
