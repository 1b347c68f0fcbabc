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
figures to results.json beside them.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

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
    for name, runs in results["fits"].items():
        seeds = " | ".join(str(r["seed"]) for r in runs)
        lines += [f"`{name}`" + (f" (`{' '.join(CONFIGS[name])}`)" if CONFIGS.get(name) else ""), "",
                  f"| seed | {seeds} | median |", "| --- |" + " ---: |" * (len(runs) + 1)]  # fmt: skip
        for key, label, form in (("test_acc", "test accuracy, 10,000 images", "{:.2f}%"),
                                 ("train_acc", "training accuracy, last epoch", "{:.2f}%"),
                                 ("seconds", "whole process, wall", "{:.1f} s")):  # fmt: skip
            values = [r[key] for r in runs]
            cells = [form.format(v) for v in [*values, statistics.median(values)]]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    if "shift_fits" in results:
        lines += network_table(results)
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
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


if __name__ == "__main__":
    main()
