"""Headless Chromium on the drawing page, for the page's tests and `python -m benchmarks.web_page`.

Debian's Chromium driven through Playwright (Playwright's own browser comes from a network CI does not have),
digits drawn as a hand draws them (mouse strokes on the pad), the static page folder served by `python -m
http.server` exactly as its docs say, and the pixels the page shows as the ones the network saw.
"""

from __future__ import annotations

import base64
import contextlib
import math
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from benchmarks.serve_process import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Offline: Chromium must not try to reach Google's services (the closed network refuses, and it would be slow).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
PAD = 280  # the canvas' size in CSS pixels
Stroke = list[tuple[float, float]]


def ellipse(cx: float, cy: float, rx: float, ry: float, points: int = 36) -> Stroke:
    return [(cx + rx * math.sin(2 * math.pi * i / points), cy - ry * math.cos(2 * math.pi * i / points))
            for i in range(points + 1)]  # fmt: skip


# Digits as a hand draws them: one or two strokes each, in canvas pixels.
STROKES: dict[int, list[Stroke]] = {
    0: [ellipse(140, 140, 60, 95)],
    1: [[(140, 40), (140, 240)]],
    2: [[(80, 90), (100, 55), (140, 40), (180, 55), (195, 95), (180, 135), (80, 230), (210, 230)]],
    3: [[(80, 60), (140, 40), (195, 70), (185, 115), (130, 135), (190, 160), (200, 205), (140, 240), (80, 220)]],
    4: [[(70, 40), (70, 160), (200, 160)], [(170, 60), (170, 245)]],
    7: [[(80, 60), (200, 60), (130, 230)]],
}
SMALL_SEVEN_IN_A_CORNER = [[(20, 20), (70, 20), (45, 80)]]  # off centre and a fifth of the pad: prepared, it is a 7
# More drawings for comparing the page's preparation with Python's: off centre, small, thin, touching the border.
MORE_DRAWINGS: list[list[Stroke]] = [
    SMALL_SEVEN_IN_A_CORNER,
    [[(200, 200), (260, 200), (230, 270)]],
    [ellipse(60, 220, 25, 40)],
    [[(0, 140), (280, 140)], [(140, 0), (140, 280)]],
    [[(130, 120), (150, 125)]],
    [ellipse(150, 120, 90, 60), [(230, 130), (200, 270)]],
]


def launch(playwright):
    """Debian's Chromium, headless, offline."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


def draw(page, strokes: list[Stroke], steps: int = 6) -> None:
    """Mouse strokes on the pad, each segment in `steps` moves, as a hand's pointer events come."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=steps)
        page.mouse.up()


def prepared_pixels(page) -> list[int]:
    """The 28x28 picture the page shows as the one the network saw, row by row."""
    return page.eval_on_selector(
        "#prepared",
        """img => { const c = document.createElement('canvas'); c.width = c.height = 28;
                   const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                   return Array.from(g.getImageData(0, 0, 28, 28).data).filter((_, i) => i % 4 === 0); }""",
    )


def pad_png(page) -> bytes:
    """The drawing as the served page sends it to `serve`: the pad as a PNG."""
    url = page.eval_on_selector("#pad", "pad => pad.toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def draw_and_predict(page, strokes: list[Stroke], as_drawn: bool = False, steps: int = 6) -> None:
    """A fresh drawing on the pad, "As drawn" set as asked, Predict pressed, and the answer on the screen."""
    page.click("#clear")
    page.set_checked("#as-drawn", as_drawn)
    draw(page, strokes, steps=steps)
    page.click("#predict")
    page.wait_for_selector("#answer:not([hidden])")


@contextlib.contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """`python -m http.server --directory FOLDER` on a free loopback port, as the docs start it; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "http.server", "--directory", str(folder), "--bind", "127.0.0.1", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/networks.json", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"python -m http.server did not start on {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def open_static_page(browser, url: str, timeout_s: float = 60) -> tuple[object, list[str], float]:
    """A new page on the static folder's URL, once its networks are loaded: (page, every URL it requested, seconds
    from navigation to networks ready)."""
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("html[data-networks-loaded]", state="attached", timeout=timeout_s * 1000)
    return page, requests, time.perf_counter() - started


# The page's own networks on many digits at once: pixels in as base64, each network's probabilities out as base64.
SCORE_IN_PAGE = """async (encoded) => {
  const pixels = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
  const outputs = await window.mnistDense.probabilities(pixels);
  return outputs.map((each) => {
    const bytes = new Uint8Array(each.buffer, each.byteOffset, each.byteLength);
    let text = "";
    for (let i = 0; i < bytes.length; i += 32768) text += String.fromCharCode(...bytes.subarray(i, i + 32768));
    return btoa(text);
  });
}"""
