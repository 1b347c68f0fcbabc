"""`make results`: rerun every accuracy figure the README shows, on the code as it is now, and write its tables.

Each run is a fresh `python -m mnist_dense ...` process, exactly as the README writes it (progress bar off; an
epoch timer, `benchmarks.baselines.EpochTimer`, which changes nothing computed):
- the tutorial's default `fit` and `configs/beyond.yaml`, `configs/fast.yaml`, `configs/conv.yaml`, for seeds 0, 1
  and 2: test accuracy (the best epoch by validation, tested after fit), training accuracy of the last epoch, wall
  time;
- shifted digits, one network a row (seed 0): the tutorial, `fit --data.max_translate 3`, `configs/conv_classic.yaml`,
  `configs/conv.yaml` and `configs/conv_translate.yaml`; `mnist_dense.shift` on their tested checkpoints to 6 pixels
  (its table and plot), beside each one's parameters, training seconds per epoch and whole fit;
- your own pictures: `mnist_dense.show --on_paper 200`, then `predict --data.predict_images` with each of those
  checkpoints, against `predict` on the same 200 test digits as MNIST stores them.
The tables go to runs/results/<time>/results.md (printed too), the plot to shift/shift_accuracy.png and the raw
figures to results.json beside them. A whole run (every part, seeds 0 1 2, no --fit_flags) also writes its tables
into docs/results.md and the headline table into README.md (benchmarks/docs_tables.py), stamped with the date, the
commit and the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import docs_tables
from benchmarks.baselines import result_lines, run_child

CONFIGS = {
    "default": [],
    "beyond": ["--config", "configs/beyond.yaml"],
    "fast": ["--config", "configs/fast.yaml"],
    # The settings `python -m mnist_dense sweep` found (README: "Search for better settings"), on the tutorial's
    # budget: all 60,000 training images, the final model tested. Measured like the configurations above.
    "searched": ["--config", "configs/searched.yaml"],
    "conv": ["--config", "configs/conv.yaml"],
}
QUIET = ["--trainer.enable_progress_bar", "false"]
TIMER = ["--trainer.callbacks+=benchmarks.baselines.EpochTimer"]
FIT_FLAGS: list[str] = []  # --fit_flags: added to every fit (a quick rehearsal of the whole script)
TEST_LINE = re.compile(r"Test accuracy: ([0-9.]+)% on ([0-9,]+) images \((.+)\)")
PAPER_COUNT = 200
MAX_SHIFT = 6
TRANSLATE = 3
SEEDS = [0, 1, 2]
# What each configuration is, for the tables' first column.
DESCRIPTIONS = {
    "default": "the tutorial: inputs / 255, Adam 1e-3, 5 epochs at batch 32, the final model tested",
    "beyond": "standardized inputs, one-cycle lr to 2e-3, 5,000 held out, the best epoch tested",
    "fast": "batch 512, one-cycle lr to 0.02, 10 epochs, 5,000 held out, the best epoch tested",
    "searched": "what `sweep` found: batch 128, standardized, one-cycle lr to 5.8e-3, shifts of up to 1 px",
    "conv": "the global-pool conv net (24,058 parameters) on the tutorial's recipe, one-cycle lr to 2e-3",
}
HEADLINE_SHIFT = 4  # the headline's shifted row: conv at this many pixels
# The rows of the shift table, seed 0: name, the fit's flags beyond CONFIGS[name], and the 3-seed run it is.
SHIFT_RUNS = {
    "tutorial": ([], "default"),
    f"max_translate_{TRANSLATE}": (["--data.max_translate", str(TRANSLATE)], None),
    "conv_classic": (["--config", "configs/conv_classic.yaml"], None),
    "conv": ([], "conv"),
    "conv_translate": (["--config", "configs/conv_translate.yaml"], None),
}


def run(args: list[str], log: Path) -> tuple[str, float]:
    """One `python -m ...` process; its output goes to `log`; a failure stops everything with the log's tail."""
    output, seconds, _ = run_child([sys.executable, "-m", *args], log)
    return output, seconds


def fit(name: str, seed: int, out: Path, *extra: str) -> dict:
    root = out / name / f"seed{seed}"
    args = ["mnist_dense", "fit", *CONFIGS.get(name, []), *extra, *FIT_FLAGS, "--seed_everything", str(seed)]
    output, seconds = run([*args, "--trainer.default_root_dir", str(root), *QUIET, *TIMER], root / "output.log")
    accuracy, _, best = TEST_LINE.search(output).groups()
    with open(root / "version_0" / "metrics.csv") as f:
        train_acc = [float(row["train_acc"]) for row in csv.DictReader(f) if row.get("train_acc")][-1]
    epochs = [r["train_seconds"] for r in result_lines(output) if "train_seconds" in r]
    return {"seed": seed, "test_acc": float(accuracy), "train_acc": 100 * train_acc, "seconds": seconds,
            "epoch_seconds": statistics.median(epochs), "parameters": parameters(best), "best": best}  # fmt: skip


def parameters(ckpt: str) -> int:
    """Trainable parameters of the checkpoint's network."""
    from mnist_dense.module import MNISTClassifier

    net = MNISTClassifier.load_from_checkpoint(ckpt, map_location="cpu").net
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def first_fit(out: Path) -> str:
    """`python -m mnist_dense fit` as a newcomer runs it, in an empty folder: the output the README shows."""
    folder = out / "first_fit"
    folder.mkdir(parents=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # stdout and stderr in the order a terminal shows them
    command = [sys.executable, "-m", "mnist_dense", "fit"]
    done = subprocess.run(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    (folder / "output.log").write_text(done.stdout)
    if done.returncode != 0:
        raise SystemExit(
            f"error: `python -m mnist_dense fit` in {folder} exited with {done.returncode}: see output.log"
        )
    return done.stdout


def shift_table(out: Path, checkpoints: dict[str, str]) -> dict[str, list[float]]:
    folder = out / "shift"
    run(["mnist_dense.shift", "--max_shift", str(MAX_SHIFT), "--out", str(folder), "--ckpt_path", *checkpoints.values(),
         "--names", *checkpoints], folder / "output.log")  # fmt: skip
    with open(folder / "shift_accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    return {name: [100 * float(row[name]) for row in rows] for name in rows[0] if name != "shift"}


def paper_check(out: Path, checkpoints: dict[str, str]) -> dict[str, dict[str, int]]:
    """Test digits drawn as photos of your own, predicted through `--data.predict_images`, against MNIST's own."""
    show = out / "show"
    run(["mnist_dense.show", "--on_paper", str(PAPER_COUNT), "--out", str(show)], show / "output.log")
    return {row: predicted_right(out / "predict" / row, ckpt, show / "paper") for row, ckpt in checkpoints.items()}


def predicted_right(out: Path, ckpt: str, paper: Path) -> dict[str, int]:
    right = {}
    for name, extra in (("paper", ["--data.predict_images", str(paper / "*.jpg")]), ("stored", [])):
        root = out / name
        run(["mnist_dense", "predict", "--ckpt_path", ckpt, *extra, "--trainer.default_root_dir", str(root), *QUIET],
            root / "output.log")  # fmt: skip
        with open(root / "version_0" / "predictions.csv") as f:
            rows = list(csv.DictReader(f))[:PAPER_COUNT]
        labels = [re.search(r"label(\d)", row["image"]).group(1) if name == "paper" else row["label"] for row in rows]
        right[name] = sum(row["predicted"] == label for row, label in zip(rows, labels, strict=True))
    return right


def markdown(results: dict, command: str) -> str:
    lines = [f"Measured with `{command}` ({results['time']}, {results['machine']}).", ""]
    if results["fits"]:
        lines += seeds_table(results)
    if "shift_fits" in results:
        lines += network_table(results)
    return "\n".join(lines) + "\n"


def fit_command(name: str) -> str:
    return " ".join(["python -m mnist_dense fit", *CONFIGS[name], "--seed_everything N"])


def seeds_table(results: dict) -> list[str]:
    """One row a configuration: the test accuracy of each seed and their median, training accuracy, wall time."""
    seeds = [r["seed"] for r in next(iter(results["fits"].values()))]
    header = ["run", *(f"seed {seed}" for seed in seeds), "median", "training accuracy, last epoch", "whole process"]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for name, runs in results["fits"].items():
        test = [r["test_acc"] for r in runs]
        cells = [f"{v:.2f}%" for v in test] + [f"**{statistics.median(test):.2f}%**"]
        cells += [f"{statistics.median(r['train_acc'] for r in runs):.2f}%"]
        cells += [f"{statistics.median(r['seconds'] for r in runs):.1f} s"]
        lines.append(f"| {DESCRIPTIONS[name]}: `{fit_command(name)}` | " + " | ".join(cells) + " |")
    return [*lines, "", "Medians of the seeds; training accuracy is `train_acc` of the last epoch in metrics.csv.", ""]


def headline(results: dict) -> str:
    """The README's table: the tutorial, beyond it, searched, conv, and conv on shifted digits."""

    def median(name: str) -> str:
        return f"{statistics.median(r['test_acc'] for r in results['fits'][name]):.2f}%"

    rows = [
        ("the tutorial's network and recipe (Keras: 97.6%)", median("default"), fit_command("default")),
        ("the same network, beyond the tutorial", median("beyond"), fit_command("beyond")),
        ("the same network, settings found by `sweep`", median("searched"), fit_command("searched")),
        ("a global-pool conv net, 24,058 parameters", median("conv"), fit_command("conv")),
        (
            f"the conv net, test digits shifted {HEADLINE_SHIFT} px (seed 0)",
            f"{results['shift']['conv'][HEADLINE_SHIFT]:.2f}%",
            f"python -m mnist_dense.shift --max_shift {MAX_SHIFT} --ckpt_path CKPT",
        ),
        (
            f"the tutorial's network, test digits shifted {HEADLINE_SHIFT} px (seed 0)",
            f"{results['shift']['tutorial'][HEADLINE_SHIFT]:.2f}%",
            f"python -m mnist_dense.shift --max_shift {MAX_SHIFT} --ckpt_path CKPT",
        ),
    ]
    lines = ["| run | test accuracy, 10,000 images | command |", "| --- | ---: | --- |"]
    lines += [f"| {what} | {figure} | `{command}` |" for what, figure, command in rows]
    lines += ["", f"Test accuracy is the median of seeds {', '.join(map(str, SEEDS))} unless a row says otherwise."]
    return "\n".join(lines)


def write_docs(results: dict, command: str) -> None:
    """The tables into docs/results.md and the headline into README.md, each opened by the run's stamp."""
    line = docs_tables.stamp(command, docs_tables.load_average() + " at the end")
    docs_tables.write_block("results-seeds", "\n".join([line, "", *seeds_table(results)]))
    docs_tables.write_block("results-networks", "\n".join([line, "", *network_table(results)]))
    docs_tables.write_block("headline", f"{line}\n\n{headline(results)}")
    output = f"```text\n$ python -m mnist_dense fit\n{results['first_fit'].rstrip()}\n```"
    docs_tables.write_block("fit-output", f"{line} Its first fit, run in an empty folder:\n\n{output}")


def network_table(results: dict) -> list[str]:
    """One row a network (seed 0): accuracy at each shift, its cost, and the own pictures it gets right."""
    shifts = [f"{size} px" for size in range(MAX_SHIFT + 1)] if "shift" in results else []
    paper = [f"own pictures (of {PAPER_COUNT}): drawn / as stored"] if "paper" in results else []
    header = ["run (seed 0)", *shifts, "parameters", "s/epoch (training)", "whole fit", *paper]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for name, run in results["shift_fits"].items():
        cells = [f"{v:.2f}%" for v in results.get("shift", {}).get(name, [])]
        cells += [f"{run['parameters']:,}", f"{run['epoch_seconds']:.1f} s", f"{run['seconds']:.1f} s"]
        if paper:
            cells.append("{paper} / {stored}".format(**results["paper"][name]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--only", default=",".join([*CONFIGS, "shift", "paper"]), help="a comma-separated subset")
    parser.add_argument("--out_dir", default="runs/results")
    parser.add_argument("--fit_flags", default="", help='added to every fit, e.g. "--trainer.max_steps 50" to rehearse')
    args = parser.parse_args(argv)
    FIT_FLAGS[:] = args.fit_flags.split()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    known = [*CONFIGS, "shift", "paper"]
    if not parts or any(p not in known for p in parts):
        parser.error(f"--only {args.only!r}: give a comma-separated subset of {','.join(known)}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out_dir) / stamp
    results: dict = {"time": stamp, "machine": f"{subprocess.getoutput('nproc')} CPUs", "fits": {}}
    for name in (p for p in parts if p in CONFIGS):
        results["fits"][name] = []
        for seed in args.seeds:
            print(f"fit {name}, seed {seed} ...", file=sys.stderr, flush=True)
            results["fits"][name].append(fit(name, seed, out))
    if {"shift", "paper"} & set(parts):
        results["shift_fits"] = {}
        for name, (flags, same_as) in SHIFT_RUNS.items():
            seed0 = [r for r in results["fits"].get(same_as, []) if r["seed"] == 0]
            if not seed0:
                print(f"fit {name}, seed 0 ...", file=sys.stderr, flush=True)
            results["shift_fits"][name] = seed0[0] if seed0 else fit(name, 0, out, *flags)
        checkpoints = {name: run["best"] for name, run in results["shift_fits"].items()}
        if "shift" in parts:
            print("the shift table ...", file=sys.stderr, flush=True)
            results["shift"] = shift_table(out, checkpoints)
        if "paper" in parts:
            print("own pictures ...", file=sys.stderr, flush=True)
            results["paper"] = paper_check(out, checkpoints)
    text = markdown(results, " ".join(["python -m benchmarks.results", *argv]))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(text)
    print(text)
    print(f"Written: {out / 'results.md'}", file=sys.stderr)
    if args.seeds == SEEDS and set(parts) == set(known) and not FIT_FLAGS:
        print("the README's first fit ...", file=sys.stderr, flush=True)
        results["first_fit"] = first_fit(out)
        write_docs(results, "make results")
        print("Written: the tables of docs/results.md and README.md", file=sys.stderr)


if __name__ == "__main__":
    main()
