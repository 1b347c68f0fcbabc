"""`python -m benchmarks.web_page`: the static page `export --format web` writes, measured in headless Chromium.

Builds the page from the checkpoints, serves it with `python -m http.server`, and reports: the folder's size, the
time from opening the page to its networks being ready and to the first answer (each in a fresh browser context,
so nothing is cached: median of --rounds), how far the page's preparation of drawings is from Python's
(`mnist_dense.pictures.prepare_picture` on the same pad), and how far the browser's probabilities on the 10,000
test digits are from onnxruntime's in Python. It writes the table into docs/serving.md, with the command as run.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.browser import (
    MORE_DRAWINGS,
    SCORE_IN_PAGE,
    STROKES,
    draw,
    draw_and_predict,
    launch,
    open_static_page,
    pad_png,
    prepared_pixels,
    static_server,
)
from benchmarks.docs_tables import load_average, write_stamped
from mnist_dense.data import load_split
from mnist_dense.data.files import default_data_dir
from mnist_dense.deploy.inference import checkpoint_path
from mnist_dense.deploy.serve import network_names
from mnist_dense.deploy.web import write_page
from mnist_dense.pictures import prepare_picture

COMMAND = "python -m benchmarks.web_page"


def parse_args(args: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", nargs="+", default=["last"], help="Checkpoints (default: newest under runs/).")
    parser.add_argument("--names", nargs="+", help="A name for each checkpoint (default: the file names).")
    parser.add_argument("--rounds", type=int, default=5, help="Fresh page loads to time (default 5).")
    return parser.parse_args(args)


def time_loads(browser, url: str, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds from navigation to the networks ready, and to the first answer on the screen, per fresh context."""
    ready, answered = [], []
    for _ in range(rounds):
        context = browser.new_context()
        started = time.perf_counter()
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("html[data-networks-loaded]", state="attached", timeout=120_000)
        ready.append(time.perf_counter() - started)
        draw(page, STROKES[7], steps=2)
        clicked = time.perf_counter()
        page.click("#predict")
        page.wait_for_selector("#answer:not([hidden])")
        answered.append(ready[-1] + time.perf_counter() - clicked)
        context.close()
    return ready, answered


def compare_preparation(browser, url: str) -> tuple[int, int, int]:
    """(drawings, largest grey-level difference, pixels that differ) between the page's and Python's preparation."""
    page, _, _ = open_static_page(browser, url)
    drawings = [(strokes, False) for strokes in [*STROKES.values(), *MORE_DRAWINGS]]
    drawings += [(strokes, True) for strokes in [*STROKES.values(), *MORE_DRAWINGS]]
    largest = differing = 0
    for strokes, as_drawn in drawings:
        draw_and_predict(page, strokes, as_drawn)
        expected = prepare_picture(pad_png(page), as_drawn=as_drawn).flatten().int()
        apart = (torch.tensor(prepared_pixels(page)) - expected).abs()
        largest, differing = max(largest, int(apart.max())), differing + int((apart > 0).sum())
    page.close()
    return len(drawings), largest, differing


def compare_test_set(browser, url: str, folder: Path, names: list[str]) -> dict[str, tuple[int, float]]:
    """Per network: (test digits whose predicted digit differs, largest probability difference), browser vs Python."""
    import onnxruntime

    images, _ = load_split(default_data_dir(), "test")
    page, _, _ = open_static_page(browser, url)
    outputs = page.evaluate(SCORE_IN_PAGE, base64.b64encode(images.numpy().tobytes()).decode())
    page.close()
    found = {}
    for name, output in zip(names, outputs, strict=True):
        in_browser = np.frombuffer(base64.b64decode(output), dtype=np.float32).reshape(-1, 10)
        session = onnxruntime.InferenceSession(str(folder / "networks" / f"{name}.onnx"))
        in_python = session.run(["probabilities"], {"images": images[:, None].float().numpy()})[0]
        disagree = int((in_browser.argmax(axis=1) != in_python.argmax(axis=1)).sum())
        found[name] = (disagree, float(np.abs(in_browser - in_python).max()))
    return found


def main(args: list[str] | None = None) -> None:
    from playwright.sync_api import sync_playwright

    options = parse_args(args)
    ckpt_paths = [checkpoint_path(value) for value in options.ckpt_path]
    names = network_names(options.names, ckpt_paths)
    with tempfile.TemporaryDirectory() as work:
        built = time.perf_counter()
        report = write_page(ckpt_paths, names, Path(work) / "page", default_data_dir())
        built = time.perf_counter() - built
        with static_server(report.path) as url, sync_playwright() as playwright:
            browser = launch(playwright)
            ready, answered = time_loads(browser, url, options.rounds)
            drawings, largest, differing = compare_preparation(browser, url)
            agreement = compare_test_set(browser, url, report.path, names)
            version = browser.version
            browser.close()
    networks = ", ".join(f"{name} ({path})" for name, path in zip(names, ckpt_paths, strict=True))
    rows = [
        "| measure | value |",
        "| --- | ---: |",
        f"| the folder (page, scripts, {report.runtime}, the networks) | {report.size / 2**20:.1f} MB |",
        f"| `export --format web` (the build, with every network's check) | {built:.1f} s |",
        f"| opening the page to its networks ready (median of {options.rounds}, nothing cached) |"
        f" {statistics.median(ready):.2f} s |",
        f"| opening the page to the first answer | {statistics.median(answered):.2f} s |",
        f"| preparation, page vs Python, {drawings} drawings: largest difference | {largest} grey level(s) |",
        f"| preparation: pixels that differ, of {drawings * 784:,} | {differing} |",
    ]
    for name, (disagree, difference) in agreement.items():
        rows.append(f"| {name}: test digits predicted differently, browser vs onnxruntime in Python | {disagree} |")
        rows.append(f"| {name}: largest probability difference over the 10,000 | {difference:.1e} |")
    text = f"Networks: {networks}; Chromium {version}.\n\n" + "\n".join(rows)
    print(text)
    command = " ".join([COMMAND, *(sys.argv[1:] if args is None else args)])
    print(f"Wrote {write_stamped('web-page', command, load_average(), text)}")


if __name__ == "__main__":
    main()
