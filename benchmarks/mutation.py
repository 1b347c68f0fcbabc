"""`make mutation`: mutmut over the core modules against the quick tests; the score per module, written into the docs.

mutmut (configured in pyproject.toml's [tool.mutmut]) copies the package into mutants/, changes one thing at a time
(an operator, a constant, a condition, a call's argument) and runs the quick tests (`-m "not slow"`) that call the
changed function, stopping at the first that fails. A mutant is killed when a test fails (or it runs past mutmut's
CPU-time limit: 6 times those tests' own time plus 6 s); it survived when every test still passes. Bounded for a
2-core machine by mutmut's own means: only the tests that reach the function, `-x`, the timeout, and two children.
One thread a process: a child forked from a process whose OpenMP threads have run can hang (every mutant would time
out), so OMP_NUM_THREADS=1.

Scope: `pictures.py`, `translate.py`, `scaling.py`, `data/files.py`, `data/sampling.py`, `checkpoints.py` whole, the
module-level functions of `callbacks/` and `PredictionCSVWriter.rows` (the callbacks' hooks run only inside a Trainer:
the end-to-end tests hold those). A survivor that cannot change what a user gets is listed in EQUIVALENT with the
reason, and left out of the score; the report lists each one.

Writes runs/mutation/latest.md (the table and every survivor's diff) and the table into docs/development.md between
its `mutation-scores` markers. Each run starts afresh (mutmut would otherwise keep every verdict it has, also for
tests since removed). ARGS="--survivors" runs only the last run's survivors again, and the mutants of functions
changed since, which mutmut resets to not checked (the loop while writing tests for them); ARGS="--report_only"
rewrites both from mutmut's last results without running it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchmarks import docs_tables

REPO = Path(__file__).resolve().parents[1]
MUTMUT = [sys.executable, "-m", "mutmut"]
# Mutant names mutmut runs: whole modules, and the module-level functions (`x_*`) of the callbacks.
MODULES = [
    "mnist_dense.pictures",
    "mnist_dense.translate",
    "mnist_dense.scaling",
    "mnist_dense.data.files",
    "mnist_dense.data.sampling",
    "mnist_dense.checkpoints",
    "mnist_dense.callbacks.interrupt",
    "mnist_dense.callbacks.plots",
    "mnist_dense.callbacks.predictions",
    "mnist_dense.callbacks.progress",
    "mnist_dense.callbacks.summary",
]
PATTERNS = [f"{m}.x_*" if ".callbacks." in m else f"{m}.*" for m in MODULES]
PATTERNS.append("mnist_dense.callbacks.predictions.xǁPredictionCSVWriterǁrows*")  # a static method, no hook
DETECTED = ("killed", "timeout")
NOT_RUN = ("skipped", "not checked", "equivalent")

# Survivors that cannot change what a user gets, each with the reason: (function, the mutated line, why). Matched on
# the mutant's own line, so a change to that code brings the mutant back as a survivor to look at again.
ON_CPU = "equivalent where the tests run (the CPU): tests/e2e/test_gpu.py holds the device on a GPU"
EQUIVALENT = [
    ("mnist_dense.translate.x_translate", "offsets = offsets.to(None)", ON_CPU),
    (
        "mnist_dense.translate.x_translate",
        "rows = margin - offsets[:, :1] + torch.arange(height, device=None)  # (N, H)",
        ON_CPU,
    ),
    ("mnist_dense.translate.x_translate", "rows = margin - offsets[:, :1] + torch.arange(height, )  # (N, H)", ON_CPU),
    (
        "mnist_dense.translate.x_translate",
        "cols = margin - offsets[:, 1:] + torch.arange(width, device=None)  # (N, W)",
        ON_CPU,
    ),
    ("mnist_dense.translate.x_translate", "cols = margin - offsets[:, 1:] + torch.arange(width, )  # (N, W)", ON_CPU),
    ("mnist_dense.translate.x_translate", "index = torch.arange(len(images), device=None)[:, None, None]", ON_CPU),
    ("mnist_dense.translate.x_translate", "index = torch.arange(len(images), )[:, None, None]", ON_CPU),
    (
        "mnist_dense.translate.x_random_translate",
        "offsets = torch.randint(-max_shift, max_shift + 1, (len(images), 2), device=None)",
        ON_CPU,
    ),
    (
        "mnist_dense.translate.x_random_translate",
        "offsets = torch.randint(-max_shift, max_shift + 1, (len(images), 2), )",
        ON_CPU,
    ),
    (
        "mnist_dense.translate.x_translate",
        "if len(images) == 0 and margin == 0:",
        "a shortcut only: no images, or a margin of 0 (whose offsets are all 0), give the same pixels either way",
    ),
    (
        "mnist_dense.callbacks.progress.x_epoch_title",
        'return f"Epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs and epochs >= 0 else "")',
        "`epochs and` has already ruled out 0",
    ),
    (
        "mnist_dense.pictures.x_center_by_mass",
        "coords = torch.arange(IMAGE_SIZE, dtype=None)",
        "integer coordinates times float masses are the same float sums",
    ),
    (
        "mnist_dense.pictures.x_center_by_mass",
        "coords = torch.arange(IMAGE_SIZE, )",
        "integer coordinates times float masses are the same float sums",
    ),
]
CLAMP = "bilinear resampling averages with weights >= 0 that sum to 1: the result already lies in [0, 1]"
EQUIVALENT += [
    (f"mnist_dense.pictures.x_{function}", line.format(size), CLAMP)
    for function, size in (("prepare_digit", "size"), ("prepare_as_drawn", "[IMAGE_SIZE, IMAGE_SIZE]"))
    for line in (
        "x = TF.resize(x[None], {}, antialias=True)[0].clamp(None, 1)",
        "x = TF.resize(x[None], {}, antialias=True)[0].clamp(0, None)",
        "x = TF.resize(x[None], {}, antialias=True)[0].clamp(0, )",
        "x = TF.resize(x[None], {}, antialias=True)[0].clamp(0, 2)",
    )
]
ANTIALIAS = "torchvision's resize antialiases tensors by default: leaving the argument out is the same call"
EQUIVALENT += [
    ("mnist_dense.pictures.x_prepare_digit", "x = TF.resize(x[None], size, )[0].clamp(0, 1)", ANTIALIAS),
    (
        "mnist_dense.pictures.x_prepare_as_drawn",
        "x = TF.resize(x[None], [IMAGE_SIZE, IMAGE_SIZE], )[0].clamp(0, 1)",
        ANTIALIAS,
    ),
]
FORMAT_ONLY_GRAY = (
    "no decoder of the five formats gives mode PA (a palette's transparency comes as info['transparency'])"
)
EQUIVALENT += [
    (
        "mnist_dense.pictures.x__grayscale",
        f'if picture.mode not in ("RGBA", "LA", {mode}) and "transparency" not in picture.info:',
        FORMAT_ONLY_GRAY,
    )
    for mode in ('"XXPAXX"', '"pa"')
]

# Found by reading each survivor: a default spelled out, a block size, a bound that cannot be reached.
EQUIVALENT += [
    (
        "mnist_dense.pictures.x__open_checked",
        "if jpeg_scans and count_jpeg_scans(data, stop_after=MAX_JPEG_SCANS + 2) > MAX_JPEG_SCANS:",
        "counting one scan further changes no verdict: more than MAX_JPEG_SCANS is refused either way",
    ),
    (
        "mnist_dense.pictures.x_count_jpeg_scans",
        'while scans < stop_after and 1 <= (at := data.find(b"\\xff", at)) < len(data) - 3:',
        "`at` starts at 2 and find() returns it or more, or -1: 0 <=, 1 <= and 0 < are the same test",
    ),
    (
        "mnist_dense.pictures.x_count_jpeg_scans",
        'while scans < stop_after and 0 < (at := data.find(b"\\xff", at)) < len(data) - 3:',
        "`at` starts at 2 and find() returns it or more, or -1: 0 <=, 1 <= and 0 < are the same test",
    ),
    (
        "mnist_dense.pictures.x_count_jpeg_scans",
        "if marker in (0x00, 0x01, 0xD8, 0xFF) or 0xD0 <= marker <= 216:  # stuffing, fill, restart: no length",
        "0xD8 (216) is already in the tuple of markers without a length",
    ),
    (
        "mnist_dense.pictures.x_count_jpeg_scans",
        "at += 1 if (marker == 0xFF) or True else 2",
        "one byte on instead of two lands on the marker byte, never 0xFF: the next find() finds the same 0xFF",
    ),
    (
        "mnist_dense.pictures.x_count_jpeg_scans",
        "at += 2 + int.from_bytes(data[at + 2 : at + 4], )",
        "int.from_bytes reads big-endian by default since Python 3.11, which the package requires",
    ),
    (
        "mnist_dense.pictures.x__grayscale",
        'on_white = Image.alpha_composite(Image.new("RGBA", rgba.size, "WHITE"), rgba).convert("L")',
        "Pillow's colour names are case-insensitive",
    ),
    (
        "mnist_dense.pictures.x__grayscale",
        'if low == high and rgba.getchannel("A").getextrema()[0] <= 255:  # light ink on a transparent background',
        "for an opaque picture of one flat colour, compositing on black or on white gives the same picture",
    ),
    (
        "mnist_dense.pictures.x__grayscale",
        'if low == high and rgba.getchannel("A").getextrema()[0] < 256:  # light ink on a transparent background',
        "for an opaque picture of one flat colour, compositing on black or on white gives the same picture",
    ),
    (
        "mnist_dense.pictures.x__grayscale",
        'return Image.alpha_composite(Image.new("RGBA", rgba.size, "BLACK"), rgba).convert("L")',
        "Pillow's colour names are case-insensitive",
    ),
    (
        "mnist_dense.checkpoints.x_read_checkpoint",
        "checkpoint = torch.load(path, map_location=None, weights_only=True)",
        "equivalent where the tests run (the CPU): tests/e2e/test_gpu.py holds the device on a GPU",
    ),
    (
        "mnist_dense.checkpoints.x_read_checkpoint",
        'checkpoint = torch.load(path, map_location="cpu", weights_only=None)',
        "torch 2.6 and later load with weights_only=True by default (the package needs torch 2.14): the same call",
    ),
    (
        "mnist_dense.checkpoints.x_read_checkpoint",
        "checkpoint = torch.load(path, weights_only=True)",
        "equivalent where the tests run (the CPU): tests/e2e/test_gpu.py holds the device on a GPU",
    ),
    (
        "mnist_dense.checkpoints.x_read_checkpoint",
        'checkpoint = torch.load(path, map_location="cpu", )',
        "torch 2.6 and later load with weights_only=True by default (the package needs torch 2.14): the same call",
    ),
    (
        "mnist_dense.checkpoints.x_peek_checkpoint",
        "checkpoint = torch.load(source, map_location=None, weights_only=True)",
        "equivalent where the tests run (the CPU): tests/e2e/test_gpu.py holds the device on a GPU",
    ),
    (
        "mnist_dense.checkpoints.x_peek_checkpoint",
        'checkpoint = torch.load(source, map_location="cpu", weights_only=None)',
        "torch 2.6 and later load with weights_only=True by default (the package needs torch 2.14): the same call",
    ),
    (
        "mnist_dense.checkpoints.x_peek_checkpoint",
        "checkpoint = torch.load(source, weights_only=True)",
        "equivalent where the tests run (the CPU): tests/e2e/test_gpu.py holds the device on a GPU",
    ),
    (
        "mnist_dense.checkpoints.x_peek_checkpoint",
        'checkpoint = torch.load(source, map_location="cpu", )',
        "torch 2.6 and later load with weights_only=True by default (the package needs torch 2.14): the same call",
    ),
    (
        "mnist_dense.checkpoints.x_peek_checkpoint",
        "with fsspec.open(str(source), ) as f:",
        "fsspec.open reads in binary mode by default",
    ),
    (
        "mnist_dense.checkpoints.x_peek_checkpoint",
        "return torch.load(f, map_location=None, weights_only=True)",
        "equivalent where the tests run (the CPU): tests/e2e/test_gpu.py holds the device on a GPU",
    ),
    (
        "mnist_dense.checkpoints.x_peek_checkpoint",
        'return torch.load(f, map_location="cpu", weights_only=None)',
        "torch 2.6 and later load with weights_only=True by default (the package needs torch 2.14): the same call",
    ),
    (
        "mnist_dense.checkpoints.x_peek_checkpoint",
        "return torch.load(f, weights_only=True)",
        "equivalent where the tests run (the CPU): tests/e2e/test_gpu.py holds the device on a GPU",
    ),
    (
        "mnist_dense.checkpoints.x_peek_checkpoint",
        'return torch.load(f, map_location="cpu", )',
        "torch 2.6 and later load with weights_only=True by default (the package needs torch 2.14): the same call",
    ),
    (
        "mnist_dense.callbacks.plots.x_save_figure",
        "fig.savefig(path, dpi=None)",
        "savefig's dpi defaults to the figure's, 100 unless matplotlib's rcParams say otherwise",
    ),
    (
        "mnist_dense.callbacks.plots.x_save_figure",
        "fig.savefig(path, )",
        "savefig's dpi defaults to the figure's, 100 unless matplotlib's rcParams say otherwise",
    ),
    (
        "mnist_dense.callbacks.plots.x_curves_figure",
        "for ax, (metric, title) in zip(fig.subplots(1, len(CURVES)), CURVES, strict=None):",
        "the two sequences zipped have the same length by construction",
    ),
    (
        "mnist_dense.callbacks.plots.x_curves_figure",
        "for ax, (metric, title) in zip(fig.subplots(1, len(CURVES)), CURVES, ):",
        "the two sequences zipped have the same length by construction",
    ),
    (
        "mnist_dense.callbacks.plots.x_curves_figure",
        "for ax, (metric, title) in zip(fig.subplots(1, len(CURVES)), CURVES, strict=False):",
        "the two sequences zipped have the same length by construction",
    ),
    (
        "mnist_dense.callbacks.plots.x_curves_figure",
        'values = [row.get(f"{stage}_{metric}", float("NAN")) for row in epochs]',
        "float() reads 'NAN' as 'nan'",
    ),
    (
        "mnist_dense.callbacks.plots.x_labelled_grid_figure",
        "grid = make_grid(images, nrow=columns, pad_value=GRID_PAD_VALUE)",
        "make_grid's default padding is 2, GRID_PADDING",
    ),
    (
        "mnist_dense.callbacks.plots.x_labelled_grid_figure",
        "cell_height, cell_width = (size + GRID_PADDING for size in images.shape[+2:])",
        "images are (N, 1, H, W): shape[2:] and shape[-2:] are the same",
    ),
    (
        "mnist_dense.callbacks.plots.x_labelled_grid_figure",
        'ax.text(x, y, text, color="yellow", fontsize=7, va="top", )',
        "matplotlib's text is left-aligned by default",
    ),
    (
        "mnist_dense.callbacks.plots.x_labelled_grid_figure",
        'ax.axis("OFF")',
        "matplotlib lowercases the argument of axis()",
    ),
    (
        "mnist_dense.callbacks.plots.x_misclassified_figure",
        "scaled = (images - images.min()) / (images.max() - images.min()).clamp_min(1.00000001)",
        "when max - min is below 1, pixels change by at most 1e-8, invisible in an 8-bit PNG",
    ),
    (
        "mnist_dense.callbacks.predictions.xǁPredictionCSVWriterǁrows",
        "probabilities, targets = torch.zeros(0, 11), torch.zeros(0, dtype=torch.long)",
        "the tensors made when nothing was predicted are empty: no row comes from them either way",
    ),
    (
        "mnist_dense.callbacks.predictions.xǁPredictionCSVWriterǁrows",
        "probabilities, targets = torch.zeros(0, 10), torch.zeros(0, dtype=None)",
        "the tensors made when nothing was predicted are empty: no row comes from them either way",
    ),
    (
        "mnist_dense.callbacks.predictions.xǁPredictionCSVWriterǁrows",
        "probabilities, targets = torch.zeros(0, 10), torch.zeros(0, )",
        "the tensors made when nothing was predicted are empty: no row comes from them either way",
    ),
    (
        "mnist_dense.callbacks.predictions.xǁPredictionCSVWriterǁrows",
        "for name, p, c, t in zip(names, predicted, confidence, targets, strict=None)",
        "the four sequences zipped have the same length by construction",
    ),
    (
        "mnist_dense.callbacks.predictions.xǁPredictionCSVWriterǁrows",
        "for name, p, c, t in zip(names, predicted, confidence, targets, )",
        "the four sequences zipped have the same length by construction",
    ),
    (
        "mnist_dense.callbacks.predictions.xǁPredictionCSVWriterǁrows",
        "for name, p, c, t in zip(names, predicted, confidence, targets, strict=False)",
        "the four sequences zipped have the same length by construction",
    ),
    (
        "mnist_dense.callbacks.summary.x_own_parameters",
        "return sum(p.numel() for p in module.parameters(recurse=None) if not isinstance(p, UninitializedParameter))",
        "recurse=None is falsy: the same as recurse=False",
    ),
    (
        "mnist_dense.callbacks.summary.x_layer_rows",
        "for name, kind, size in zip(summary.layer_names, summary.layer_types, summary.out_sizes, strict=None):",
        "Lightning's summary gives names, types and sizes of the same length",
    ),
    (
        "mnist_dense.callbacks.summary.x_layer_rows",
        "for name, kind, size in zip(summary.layer_names, summary.layer_types, summary.out_sizes, ):",
        "Lightning's summary gives names, types and sizes of the same length",
    ),
    (
        "mnist_dense.callbacks.summary.x_layer_rows",
        "for name, kind, size in zip(summary.layer_names, summary.layer_types, summary.out_sizes, strict=False):",
        "Lightning's summary gives names, types and sizes of the same length",
    ),
    (
        "mnist_dense.data.sampling.xǁResumableSamplerǁ__init__",
        "super().__init__(dataset, num_replicas=world_size, rank=rank, seed=shuffle_seed(seed))",
        "shuffle=True is DistributedSampler's default",
    ),
    (
        "mnist_dense.data.files.x__gunzip",
        'with gzip.open(packed, ) as src, open(partial, "wb") as dst:',
        "gzip.open opens for binary reading by default",
    ),
    (
        "mnist_dense.data.files.x__gunzip",
        "shutil.copyfileobj(src, dst, length=None)",
        "a copy's block size changes its speed, not the bytes copied",
    ),
    (
        "mnist_dense.data.files.x__gunzip",
        "shutil.copyfileobj(src, dst, )",
        "a copy's block size changes its speed, not the bytes copied",
    ),
    (
        "mnist_dense.data.files.x__gunzip",
        "shutil.copyfileobj(src, dst, length=1 >> 20)",
        "a copy's block size changes its speed, not the bytes copied",
    ),
    (
        "mnist_dense.data.files.x__gunzip",
        "shutil.copyfileobj(src, dst, length=2 << 20)",
        "a copy's block size changes its speed, not the bytes copied",
    ),
    (
        "mnist_dense.data.files.x__gunzip",
        "shutil.copyfileobj(src, dst, length=1 << 21)",
        "a copy's block size changes its speed, not the bytes copied",
    ),
    (
        "mnist_dense.data.files.x__download",
        "MNIST(str(folder.parent.parent), train=None, download=True)",
        "torchvision's MNIST downloads all four files whichever split it is asked for",
    ),
    (
        "mnist_dense.data.files.x__download",
        "MNIST(str(folder.parent.parent), train=False, download=True)",
        "torchvision's MNIST downloads all four files whichever split it is asked for",
    ),
    (
        "mnist_dense.data.files.x__md5",
        'for block in iter(lambda: f.read(None), b""):',
        "a digest's block size changes its speed, not the digest",
    ),
    (
        "mnist_dense.data.files.x__md5",
        'for block in iter(lambda: f.read(2 << 20), b""):',
        "a digest's block size changes its speed, not the digest",
    ),
    (
        "mnist_dense.data.files.x__md5",
        'for block in iter(lambda: f.read(1 << 21), b""):',
        "a digest's block size changes its speed, not the digest",
    ),
]


CLOSED = "the figures are matplotlib Figure objects, not pyplot's: add_figure's plt.close of one changes nothing"
LABELS = "torchmetrics labels the axes 0..N-1 when no labels are given: the same tick labels"
EQUIVALENT += [
    (
        "mnist_dense.callbacks.plots.x_publish",
        "logger.experiment.add_figure(path.stem, fig, global_step=trainer.global_step, close=None)",
        CLOSED,
    ),
    (
        "mnist_dense.callbacks.plots.x_publish",
        "logger.experiment.add_figure(path.stem, fig, global_step=trainer.global_step, )",
        CLOSED,
    ),
    (
        "mnist_dense.callbacks.plots.x_publish",
        "logger.experiment.add_figure(path.stem, fig, global_step=trainer.global_step, close=True)",
        CLOSED,
    ),
    ("mnist_dense.callbacks.plots.x_confusion_figure", "val=matrix, ax=fig.subplots(), labels=None", LABELS),
    ("mnist_dense.callbacks.plots.x_confusion_figure", "val=matrix, ax=fig.subplots(), )", LABELS),
]


def run_mutmut(names: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([*MUTMUT, "run", *names], cwd=REPO, env=env, check=True)


def results() -> dict[str, str]:
    """Every mutant of the scope and its status, from `mutmut results --all true`; a survivor that `EQUIVALENT`
    names gets the status "equivalent"."""
    listing = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    found = dict(line.strip().rsplit(": ", 1) for line in listing.splitlines() if ": " in line)
    scope = {name: status for name, status in found.items() if any(re.fullmatch(_glob(p), name) for p in PATTERNS)}
    for name, status in scope.items():
        if status not in DETECTED and status not in NOT_RUN and equivalence(name) is not None:
            scope[name] = "equivalent"
    return scope


def mutated_line(name: str) -> str:
    """The line as the mutant has it (the `+` line of `mutmut show`)."""
    diff = subprocess.run([*MUTMUT, "show", name], cwd=REPO, capture_output=True, text=True).stdout
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return added[0] if len(added) == 1 else ""


def equivalence(name: str) -> str | None:
    function = name.rsplit("__mutmut_", 1)[0]
    line = mutated_line(name)
    return next((why for f, mutated, why in EQUIVALENT if f == function and mutated == line), None)


def _glob(pattern: str) -> str:
    return re.escape(pattern).replace(r"\*", ".*")


def module_of(name: str) -> str:
    return re.split(r"\.x[_ǁ]", name, maxsplit=1)[0]


def table(statuses: dict[str, str]) -> str:
    by_module: dict[str, Counter] = {m: Counter() for m in MODULES}
    for name, status in statuses.items():
        by_module[module_of(name)][status] += 1
    lines = [
        "| module | mutants | not run yet | equivalent | killed | timed out | survived | score |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    total = Counter()
    for module, counts in by_module.items():
        total.update(counts)
        lines.append(_row(f"`{module}`", counts))
    lines.append(_row("**all**", total))
    return "\n".join(lines)


def _row(label: str, counts: Counter) -> str:
    """Score: killed or timed out, of the mutants run that change behaviour (all but the equivalent and the unrun)."""
    changing = sum(n for status, n in counts.items() if status not in NOT_RUN)
    detected = sum(counts[s] for s in DETECTED)
    score = f"{100 * detected / changing:.1f}%" if changing else "-"
    not_run = counts["not checked"] + counts["skipped"]
    return (
        f"| {label} | {changing + counts['equivalent'] + not_run} | {not_run} | {counts['equivalent']} |"
        f" {counts['killed']} | {counts['timeout']} | {changing - detected} | {score} |"
    )


def report(statuses: dict[str, str], load: str, command: str = "make mutation") -> str:
    equivalent = sorted(name for name, status in statuses.items() if status == "equivalent")
    lines = [
        docs_tables.stamp(command, load),
        "",
        f"{len(statuses)} mutants of the core against the quick tests. The score is the share of the mutants that"
        " change behaviour which a test killed or which timed out.",
        "",
        table(statuses),
        "",
        f"Left out as equivalent ({len(equivalent)}; listed with the reason in `benchmarks/mutation.py`, EQUIVALENT):",
        "",
        *(
            f"- `{mutated_line(name)}` in `{name.rsplit('__mutmut_', 1)[0]}`: {equivalence(name)}"
            for name in equivalent
        ),
    ]
    return "\n".join(lines)


def survivors(statuses: dict[str, str]) -> str:
    shown = []
    for name, status in sorted(statuses.items()):
        if status in DETECTED or status in NOT_RUN:
            continue
        diff = subprocess.run([*MUTMUT, "show", name], cwd=REPO, capture_output=True, text=True).stdout
        shown.append(f"### {name} ({status})\n\n```diff\n{diff.strip()}\n```\n")
    return "\n".join(shown) or "No survivors.\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mutation", description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--report_only", action="store_true", help="Report mutmut's last results; run nothing.")
    what.add_argument(
        "--survivors",
        action="store_true",
        help="Run again only the last run's survivors (and mutants of code changed since), against today's tests.",
    )
    options = parser.parse_args(argv)
    load = "load average not measured: --report_only"
    if options.survivors:
        run_mutmut([name for name, status in results().items() if status in ("survived", "not checked")])
    elif not options.report_only:
        shutil.rmtree(REPO / "mutants", ignore_errors=True)  # every mutant against today's tests, none remembered
        run_mutmut(PATTERNS)
    if not options.report_only:
        load = docs_tables.load_average() + " at the end of the run"
    statuses = results()
    if not statuses:
        raise SystemExit("error: mutmut has no results for the scope yet: run `make mutation` without --report_only.")
    text = report(statuses, load, " ".join(["make mutation", *(f"ARGS={arg}" for arg in (argv or sys.argv[1:]))]))
    out = REPO / "runs" / "mutation"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.md").write_text(f"{text}\n\n## Survivors\n\n{survivors(statuses)}")
    page = docs_tables.write_block("mutation-scores", text)
    print(text)
    print(f"\nWritten: {out / 'latest.md'} (with every survivor's diff) and the table in {page}")


if __name__ == "__main__":
    main()
