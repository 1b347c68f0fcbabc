"""Ask a running `serve` about a seven drawn as the drawing page draws it: in the middle of the pad, in each corner,
and small in a corner; each as drawn (the whole pad scaled to 28x28) and as MNIST prepares its digits.

Needs Pillow and nothing of this package. With `serve --ckpt_path DENSE CONV --names dense conv` running:

    python examples/corner_sevens.py http://127.0.0.1:8000
"""

from __future__ import annotations

import base64
import io
import json
import sys
import urllib.request

from PIL import Image, ImageDraw

PAD = 280  # the page's canvas, in pixels
PEN = PAD // 14  # the page's stroke: about 2 pixels of 28, as MNIST's
SEVEN = [(80, 60), (200, 60), (130, 230)]  # one stroke, as tests/e2e/deploy/test_page.py draws it
PLACES = {  # moved by (dx, dy) pixels of the pad, scaled about its centre
    "middle": (0, 0, 1.0),
    "top left": (-60, -55, 1.0),
    "top right": (60, -55, 1.0),
    "bottom left": (-60, 45, 1.0),
    "bottom right": (60, 45, 1.0),
    "small, top left": (-75, -70, 0.6),
}


def drawing(dx: int, dy: int, scale: float) -> str:
    """Black ink on a transparent pad, as the page's canvas exports it, as a data: URL."""
    pad = Image.new("RGBA", (PAD, PAD), (0, 0, 0, 0))
    pen = ImageDraw.Draw(pad)
    points = [(PAD / 2 + (x - PAD / 2) * scale + dx, PAD / 2 + (y - PAD / 2) * scale + dy) for x, y in SEVEN]
    pen.line(points, fill=(0, 0, 0, 255), width=PEN, joint="curve")
    for x, y in (points[0], points[-1]):  # round caps
        pen.ellipse([x - PEN / 2, y - PEN / 2, x + PEN / 2, y + PEN / 2], fill=(0, 0, 0, 255))
    png = io.BytesIO()
    pad.save(png, "PNG")
    return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()


def ask(url: str, image: str, as_drawn: bool) -> list[dict]:
    body = json.dumps({"image": image, "as_drawn": as_drawn}).encode()
    request = urllib.request.Request(f"{url}/predict", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        answer = json.load(response)
    return answer.get("answers", [answer])


def main(url: str) -> None:
    for place, (dx, dy, scale) in PLACES.items():
        for as_drawn in (True, False):
            answers = ask(url, drawing(dx, dy, scale), as_drawn)
            said = "  ".join(f"{a.get('network', 'net')}: {a['digit']} ({a['probability']:.2f})" for a in answers)
            print(f"{place:16} {'as drawn' if as_drawn else 'prepared':9} {said}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000")
