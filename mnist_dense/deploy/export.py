"""`python -m mnist_dense export --ckpt_path CKPT`: the trained network as one ONNX file, checked before it is kept.

The graph is the whole inference (`PixelsToProbabilities`): input `images`, float32 (N, 1, 28, 28) pixels
0-255 as MNIST stores them, any N; the checkpoint's normalization; output `probabilities` (N, 10). It is
written to a hidden file beside the target, run on the 10,000 test images by onnxruntime (or, for
`--format pt2`, by `torch.export.load`), compared with the PyTorch model, and renamed into place only when
every predicted digit agrees: a failed export leaves nothing behind.

`--format web` writes the drawing page as a folder a static file server serves, the networks running in the
browser (`mnist_dense.deploy.web`).

Lightning's `LightningModule.to_onnx` exports the module's own forward (logits, no normalization), so the
whole-inference module goes through `torch.onnx.export` (the dynamo exporter) directly.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mnist_dense.atomic import replaced_atomically
from mnist_dense.checkpoints import CheckpointError
from mnist_dense.constants import IMAGE_SIZE
from mnist_dense.data import MNISTDataError, load_split
from mnist_dense.data.files import default_data_dir
from mnist_dense.deploy.inference import (
    DeployError,
    PixelsToProbabilities,
    WithScore,
    checkpoint_path,
    fail,
    load_inference_model,
    require_extra,
)
from mnist_dense.deploy.options import command_parser, parse_flat

ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")
INPUT_NAME, OUTPUT_NAME, SCORE_NAME = "images", "probabilities", "not_a_digit_score"
THRESHOLD_KEY = "not_a_digit_threshold"  # in the ONNX file's metadata, where `calibrate` set one
EXAMPLE_BATCH = 2  # torch.export treats a batch of 1 as a constant; the graph is still valid for any N


@dataclass
class ExportCheck:
    """The exported file against the PyTorch model on the test set."""

    path: Path
    runtime: str
    images: int
    disagreements: int
    max_difference: float
    accuracy: float
    torch_accuracy: float
    threshold: float | None = None


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = command_parser("python -m mnist_dense export", __doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt_path",
        required=True,
        nargs="+",
        help="A checkpoint of `fit`, or `last` (newest under runs/); with --format web, several side by side.",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="File to write (default: beside the checkpoint, .onnx or .pt2); with --format web, the folder"
        " (default: page/ beside the first checkpoint).",
    )
    parser.add_argument(
        "--format",
        choices=("onnx", "pt2", "web"),
        default="onnx",
        help="ONNX, a torch.export program, or the drawing page as a static folder (the networks run in the browser).",
    )
    parser.add_argument(
        "--names",
        nargs="+",
        help="With --format web: a name for each checkpoint, as serve takes them (default: the file names).",
    )
    parser.add_argument("--data.data_dir", default=default_data_dir(), help="Folder holding MNIST/raw, for the check.")
    return parse_flat(parser, args)


def main(args: list[str]) -> None:
    options = parse_args(args)
    try:
        ckpt_paths = [checkpoint_path(value) for value in options.ckpt_path]
        if options.format == "web":
            return print_page(write_web_page(ckpt_paths, options))
        if len(ckpt_paths) > 1 or options.names:
            raise DeployError(
                f"--format {options.format} writes one network to one file: give one --ckpt_path (and no --names);"
                " several networks go side by side into one page with --format web."
            )
        check = export(ckpt_paths[0], options.output, options.format, options.data_dir)
    except (CheckpointError, MNISTDataError, DeployError) as err:
        fail(err)
    print(
        f"Wrote {check.path} ({check.path.stat().st_size / 1024:.0f} KB): input '{INPUT_NAME}' float32"
        f" (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}), pixels 0-255, white digit on black; output '{OUTPUT_NAME}' (N, 10)"
        f" and '{SCORE_NAME}' (N).{threshold_sentence(check.threshold)}"
    )
    print(
        f"Check with {check.runtime} on the {check.images:,} test images: every predicted digit agrees with PyTorch;"
        f" largest probability difference {check.max_difference:.2e}; accuracy {100 * check.accuracy:.2f}%"
        f" (PyTorch {100 * check.torch_accuracy:.2f}%)."
    )


def write_web_page(ckpt_paths: list[Path], options: argparse.Namespace):
    from mnist_dense.deploy.serve import network_names
    from mnist_dense.deploy.web import write_page

    require_extra("export --format web", ONNX_MODULES)
    names = network_names(options.names, ckpt_paths)
    output = options.output if options.output is not None else ckpt_paths[0].parent / "page"
    return write_page(ckpt_paths, names, output, options.data_dir)


def print_page(report) -> None:
    networks = ", ".join(
        f"{name} (test accuracy {100 * check.accuracy:.2f}%, as PyTorch: largest probability difference"
        f" {check.max_difference:.2e})"
        for name, check in report.checks.items()
    )
    print(f"Wrote {report.path} ({report.size / 2**20:.1f} MB): the drawing page with {networks}; {report.runtime}.")
    print(
        f"Open it through any static file server, e.g. `python -m http.server --directory {report.path}` and"
        " http://localhost:8000 (not as a file: browsers do not run its scripts from file://)."
    )


def export(ckpt_path: Path, output: Path | None, fmt: str, data_dir: str) -> ExportCheck:
    """Write, check, then rename into place; everything that can fail is tried before the target is touched."""
    if fmt == "onnx":
        require_extra("export --format onnx", ONNX_MODULES)
    model = load_inference_model(ckpt_path)
    images, labels = load_split(data_dir, "test")
    target = output if output is not None else ckpt_path.with_suffix(f".{fmt}")
    if target.is_dir():
        raise DeployError(f"--output {target} is a folder; give a file name such as {target / f'digits.{fmt}'}.")
    write, load = (write_onnx, load_onnx) if fmt == "onnx" else (write_pt2, load_pt2)
    try:
        with replaced_atomically(target) as partial:  # renamed onto the target only once it is checked
            write(model, partial)
            runtime, run = load(partial)
            check = compare(model, run, images[:, None].float(), labels, partial, runtime)
            if check.disagreements:
                raise DeployError(
                    f"the exported {fmt} file predicts another digit than PyTorch for {check.disagreements} of the"
                    f" {check.images:,} test images (largest probability difference {check.max_difference:.2e});"
                    f" nothing was written to {target}. Please report this with your torch and {runtime} versions."
                )
    except OSError as err:
        raise DeployError(f"cannot write {target} ({err}); choose another --output.") from None
    check.path, check.threshold = target, model.threshold
    return check


def threshold_sentence(threshold: float | None) -> str:
    if threshold is None:
        return ""
    return f" A picture whose '{SCORE_NAME}' is above {threshold!r} is not a digit (metadata '{THRESHOLD_KEY}')."


def example_input() -> tuple[Tensor]:
    return (torch.zeros(EXAMPLE_BATCH, 1, IMAGE_SIZE, IMAGE_SIZE),)


def batch_dimension() -> tuple[dict[int, torch.export.Dim]]:
    return ({0: torch.export.Dim("batch", min=1)},)


def write_onnx(model: PixelsToProbabilities, path: Path) -> None:
    """One self-contained .onnx file (weights inside, no .onnx.data beside it), checked by onnx's checker."""
    import onnx

    program = torch.onnx.export(
        WithScore(model).eval(),
        example_input(),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME, SCORE_NAME],
        dynamic_shapes=batch_dimension(),
        dynamo=True,
        verbose=False,
    )
    program.save(path, external_data=False)
    if model.threshold is not None:  # the threshold where a program outside Python finds it, beside the graph
        graph = onnx.load(str(path))
        onnx.helper.set_model_props(graph, {THRESHOLD_KEY: repr(model.threshold)})
        onnx.save(graph, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def load_onnx(path: Path) -> tuple[str, Callable[[Tensor], Tensor]]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(images: Tensor) -> Tensor:
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0])

    return f"onnxruntime {onnxruntime.__version__}", run


def write_pt2(model: PixelsToProbabilities, path: Path) -> None:
    program = torch.export.export(WithScore(model).eval(), example_input(), dynamic_shapes=batch_dimension())
    torch.export.save(program, path)


def load_pt2(path: Path) -> tuple[str, Callable[[Tensor], Tensor]]:
    module = torch.export.load(path).module()
    return f"torch.export.load (torch {torch.__version__})", lambda images: module(images)[0]


@torch.inference_mode()
def compare(
    model: PixelsToProbabilities,
    run: Callable[[Tensor], Tensor],
    images: Tensor,
    labels: Tensor,
    path: Path,
    runtime: str,
) -> ExportCheck:
    """Both on every test image at once: predicted digits, largest probability difference, accuracy."""
    expected, exported = model(images), run(images)
    expected_digits, exported_digits = expected.argmax(dim=1), exported.argmax(dim=1)
    return ExportCheck(
        path=path,
        runtime=runtime,
        images=len(labels),
        disagreements=int((expected_digits != exported_digits).sum()),
        max_difference=float((expected - exported).abs().max()),
        accuracy=float((exported_digits == labels).float().mean()),
        torch_accuracy=float((expected_digits == labels).float().mean()),
    )
