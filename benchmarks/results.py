"""`make results`: rerun every accuracy figure the README shows, on the code as it is now, and write its tables.

Each run is a fresh `python -m mnist_dense ...` process, exactly as the README writes it (progress bar off):
- the tutorial's default `fit` and `configs/beyond.yaml`, `configs/fast.yaml`, for seeds 0, 1 and 2: test accuracy
  (the best epoch by validation, tested after fit), training accuracy of the last epoch, wall time;
- shifted digits: `fit --data.max_translate 3` (seed 0), then `mnist_dense.shift` on its best checkpoint and the
  default seed-0 one;
- your own pictures: `mnist_dense.show --on_paper 200`, then `predict --data.predict_images` with the default
  seed-0 checkpoint, against `predict` on the same 200 test digits as MNIST stores them.
The tables go to runs/results/<time>/results.md (printed too) and the raw figures to results.json beside it.
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

from benchmarks.baselines import run_child

CONFIGS = {"default": [], "beyond": ["--config", "configs/beyond.yaml"], "fast": ["--config", "configs/fast.yaml"]}
# The settings `python -m mnist_dense sweep` found (README: "Search for better settings"), on the tutorial's budget:
# all 60,000 training images, the final model tested. Measured like the configurations above.
CONFIGS["searched"] = ["--config", "configs/searched.yaml"]
QUIET = ["--trainer.enable_progress_bar", "false"]
TEST_LINE = re.compile(r"Test accuracy: ([0-9.]+)% on ([0-9,]+) images \((.+)\)")
PAPER_COUNT = 200
MAX_SHIFT = 4
TRANSLATE = 3


def run(args: list[str], log: Path) -> tuple[str, float]:
    """One `python -m ...` process; its output goes to `log`; a failure stops everything with the log's tail."""
    output, seconds, _ = run_child([sys.executable, "-m", *args], log)
    return output, seconds


def fit(name: str, seed: int, out: Path, *extra: str) -> dict:
    root = out / name / f"seed{seed}"
    args = ["mnist_dense", "fit", *CONFIGS.get(name, []), *extra, "--seed_everything", str(seed)]
    output, seconds = run([*args, "--trainer.default_root_dir", str(root), *QUIET], root / "output.log")
    accuracy, _, best = TEST_LINE.search(output).groups()
    with open(root / "version_0" / "metrics.csv") as f:
        train_acc = [float(row["train_acc"]) for row in csv.DictReader(f) if row.get("train_acc")][-1]
    return {"seed": seed, "test_acc": float(accuracy), "train_acc": 100 * train_acc, "seconds": seconds, "best": best}


def shift_table(out: Path, tutorial: str, translated: str) -> dict[str, list[float]]:
    folder = out / "shift"
    run(["mnist_dense.shift", "--max_shift", str(MAX_SHIFT), "--out", str(folder), "--ckpt_path", tutorial, translated,
         "--names", "tutorial", f"max_translate_{TRANSLATE}"], folder / "output.log")  # fmt: skip
    with open(folder / "shift_accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    return {name: [100 * float(row[name]) for row in rows] for name in rows[0] if name != "shift"}


def paper_check(out: Path, ckpt: str) -> dict[str, int]:
    """Test digits drawn as photos of your own, predicted through `--data.predict_images`, against MNIST's own."""
    show = out / "show"
    run(["mnist_dense.show", "--on_paper", str(PAPER_COUNT), "--out", str(show)], show / "output.log")
    right = {}
    for name, extra in (("paper", ["--data.predict_images", str(show / "paper" / "*.jpg")]), ("stored", [])):
        root = out / f"predict_{name}"
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
    if "shift" in results:
        shifts = range(MAX_SHIFT + 1)
        lines += ["| shift (pixels) | " + " | ".join(map(str, shifts)) + " |", "| --- |" + " ---: |" * len(shifts)]
        for name, values in results["shift"].items():
            lines.append(f"| {name} | " + " | ".join(f"{v:.2f}%" for v in values) + " |")
        lines.append("")
    if "paper" in results:
        paper = results["paper"]
        lines.append(f"Own pictures: {paper['paper']} of {PAPER_COUNT} test digits drawn on paper predicted right,"
                     f" against {paper['stored']} of the same {PAPER_COUNT} as MNIST stores them.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", default=",".join([*CONFIGS, "shift", "paper"]), help="a comma-separated subset")
    parser.add_argument("--out_dir", default="runs/results")
    args = parser.parse_args(argv)
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
        seed0 = [r for r in results["fits"].get("default", []) if r["seed"] == 0]
        tutorial = seed0[0]["best"] if seed0 else fit("default", 0, out)["best"]
        if "shift" in parts:
            print("fit with shifted digits, then the shift table ...", file=sys.stderr, flush=True)
            translated = fit(f"max_translate_{TRANSLATE}", 0, out, "--data.max_translate", str(TRANSLATE))
            results["shift"] = shift_table(out, tutorial, translated["best"])
        if "paper" in parts:
            print("own pictures ...", file=sys.stderr, flush=True)
            results["paper"] = paper_check(out, tutorial)
    text = markdown(results, " ".join(["python -m benchmarks.results", *argv]))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(text)
    print(text)
    print(f"Written: {out / 'results.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
